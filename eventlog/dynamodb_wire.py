"""DynamoDB's JSON protocol spoken directly, for the calls a step makes.

Why: a step costs about two conditional DynamoDB writes, and boto3 spends about
1.1 ms of client CPU on each (building, validating, signing and parsing through
its event pipeline). With a batch's calls in flight together, that CPU -- not
the network -- is what bounds one Lambda invocation on a shard.

:class:`WireClient` makes the same calls with the same parameters and answers:
the low-level client's shapes *are* DynamoDB's JSON (string-typed attribute
values), so the body is ``json.dumps(params)``. Requests are signed by
botocore's own SigV4 signer with the credentials boto3 would use, and go out on
one kept-alive connection per thread. Errors arrive as the boto3 client's own
exception classes (a ``ClientError`` with the same ``Error.Code`` and the same
extra fields, such as the ``Item`` of a refused condition), so callers and the
retry policy (:mod:`eventlog.retrying`) cannot tell the two apart. Binary
attribute values are refused (they need the shape to encode): callers that
store bytes use the boto3 client.

Anything other than the four item calls goes to the boto3 client (``.boto``).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

TARGET_PREFIX = "DynamoDB_20120810."
CONTENT_TYPE = "application/x-amz-json-1.0"
# connection-level failures on a kept-alive connection the server may have closed meanwhile:
# the request is sent again once on a fresh connection (as urllib3 does for boto3)
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, http.client.BadStatusLine)

CallObserver = Callable[[str, dict[str, Any], float, float, float], None]
"""``(operation, params, start, end, thread CPU seconds)`` after every call: for benchmarks."""

OBSERVERS: list[CallObserver] = []


class BinaryValueError(TypeError):
    """A parameter carries bytes, which this client does not encode (use the boto3 client)."""


def _refuse_bytes(value: Any) -> None:
    if isinstance(value, bytes | bytearray):
        raise BinaryValueError("WireClient sends no binary attribute values; use the boto3 client for them")
    if isinstance(value, dict):
        for v in value.values():
            _refuse_bytes(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _refuse_bytes(v)


class WireClient:
    """``update_item``, ``put_item``, ``get_item`` and ``batch_get_item`` of a boto3 DynamoDB client,
    without boto3's per-call pipeline. Thread-safe: each thread keeps its own connection."""

    def __init__(self, boto: Any, *, timeout_s: float = 10.0) -> None:
        import boto3

        self.boto = boto
        self.exceptions = boto.exceptions
        self.meta = boto.meta
        self._region = boto.meta.region_name
        url = urlsplit(boto.meta.endpoint_url)
        self._https = url.scheme == "https"
        self._host = url.hostname or ""
        self._port = url.port or (443 if self._https else 80)
        self._netloc = url.netloc
        self._url = f"{url.scheme}://{url.netloc}/"
        self._timeout = timeout_s
        self._credentials = boto3.session.Session().get_credentials()
        self._local = threading.local()
        self._ssl: ssl.SSLContext | None = None
        if self._https:
            from botocore.httpsession import get_cert_path

            self._ssl = ssl.create_default_context(cafile=get_cert_path(True))

    # ------------------------------------------------------------------ the four calls

    def update_item(self, **params: Any) -> dict[str, Any]:
        return self._call("UpdateItem", params)

    def put_item(self, **params: Any) -> dict[str, Any]:
        return self._call("PutItem", params)

    def get_item(self, **params: Any) -> dict[str, Any]:
        return self._call("GetItem", params)

    def batch_get_item(self, **params: Any) -> dict[str, Any]:
        return self._call("BatchGetItem", params)

    # ------------------------------------------------------------------ one request

    def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        from eventlog.aws import API_CALLS

        API_CALLS[("dynamodb", operation)] += 1
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return self._send(operation, params)
        finally:
            if OBSERVERS:
                end, used = time.perf_counter(), time.thread_time() - cpu
                for observe in OBSERVERS:
                    observe(operation, params, start, end, used)

    def _send(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            body = json.dumps(params, separators=(",", ":")).encode()
        except TypeError:
            _refuse_bytes(params)
            raise
        headers = self._signed(operation, body)
        for fresh in (False, True):
            reused = False
            try:
                conn, reused = self._connection(fresh)
                conn.request("POST", "/", body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except _STALE as exc:
                self._drop()
                if reused and not fresh:
                    continue  # the server closed an idle connection: send once more on a new one
                raise self._unreachable(operation, exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise self._unreachable(operation, exc) from exc
            if response.will_close:
                self._drop()
            return self._parsed(operation, response, data)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _signed(self, operation: str, body: bytes) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method="POST", url=self._url, data=body,
                             headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET_PREFIX + operation})
        SigV4Auth(self._credentials.get_frozen_credentials(), "dynamodb", self._region).add_auth(request)
        headers = dict(request.headers.items())
        headers["Host"] = self._netloc
        return headers

    def _parsed(self, operation: str, response: http.client.HTTPResponse, data: bytes) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        crc = response.getheader("x-amz-crc32")
        if crc is not None and crc.isdigit() and zlib.crc32(data) != int(crc):
            from botocore.exceptions import ChecksumError

            raise ChecksumError(checksum_type="crc32", expected_checksum=crc, actual_checksum=str(zlib.crc32(data)))
        try:
            parsed: dict[str, Any] = json.loads(data) if data else {}
        except ValueError:
            parsed = {}
        meta = {"HTTPStatusCode": response.status, "RequestId": response.getheader("x-amzn-requestid", "")}
        if response.status < 300:
            parsed["ResponseMetadata"] = meta
            return parsed
        code = str(parsed.pop("__type", "") or "").rpartition("#")[2] or str(response.status)
        message = str(parsed.pop("message", None) or parsed.pop("Message", None) or response.reason)
        error = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": meta, **parsed}
        cls = getattr(self.exceptions, code, None) if code.isidentifier() else None
        if not (isinstance(cls, type) and issubclass(cls, ClientError)):
            cls = ClientError
        raise cls(error, operation)

    def _unreachable(self, operation: str, exc: BaseException) -> Exception:
        from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

        if isinstance(exc, socket.timeout | TimeoutError):
            return ReadTimeoutError(endpoint_url=self._url, error=exc)
        return EndpointConnectionError(endpoint_url=self._url, error=f"{operation}: {exc}")

    # ------------------------------------------------------------------ connections

    def _connection(self, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and not fresh:
            return conn, True
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        conn.connect()
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._local.conn = conn
        return conn, False

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()


def item_client(boto: Any) -> Any:
    """The client for a backend's item calls: a :class:`WireClient` over ``boto``, or ``boto`` itself
    where boto3 does something this client does not (an HTTP(S) proxy from the environment)."""
    from urllib.request import getproxies, proxy_bypass

    proxies = getproxies()
    host = urlsplit(boto.meta.endpoint_url).hostname or ""
    if (proxies.get("https") or proxies.get("http")) and not proxy_bypass(host):
        return boto
    return WireClient(boto)
