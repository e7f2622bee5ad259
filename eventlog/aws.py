"""AWS plumbing shared by every AWS backend: ARNs, boto3 clients, calls, pages, waits, error mapping.

boto3 is imported inside functions so that importing this module (and so the
log layer) stays cheap for the embedded default. botocore's own retries are
off: every call goes through :func:`call`, which applies the one retry policy
of :mod:`eventlog.retrying` and turns botocore's errors into ``BackendError``
(with ``service``, ``operation`` and ``code``) or ``ServiceUnavailable``.
Listings use boto3's paginators (:func:`pages`, each page fetched through
:func:`call`), waits use boto3's waiters (:func:`wait`), and refused batch
entries are resent by the same policy (:func:`send_entries`, :func:`batch_write`).

Every real API call is counted in :data:`API_CALLS` keyed by
``(service, Operation)``; benchmarks and tests read it.
"""

from __future__ import annotations

import collections
import functools
import math
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from .errors import BackendError, RecordTooLarge, ServiceUnavailable, SettingsError
from .retrying import ATTEMPTS, error_code, is_transient, resend_refused, retrying
from .settings import Settings

API_CALLS: collections.Counter = collections.Counter()

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 10.0

# boto3 waiters (table and stream creation or deletion): moto answers at once, AWS within a minute or two
WAITER_DELAY = 2  # seconds between polls
WAITER_ATTEMPTS = 150  # polls before giving up: five minutes

# tests set this to shrink every page a paginator asks for, so listings cross pages on small data
PAGE_SIZE_CAP: int | None = None

# error codes that mean the resource is not there (callers compare ``BackendError.code`` against them)
MISSING_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NotFound",
        "NotFoundException",
    }
)

# the test seam for the retry policy's pauses (tests never wait on it for correctness)
sleep: Callable[[float], None] = time.sleep


def _pause(seconds: float) -> None:
    sleep(seconds)  # looked up at each pause, so a test's replacement of ``sleep`` takes effect

T = TypeVar("T")


class Arn(NamedTuple):
    partition: str
    service: str
    region: str
    account: str
    resource_type: str  # "table", "stream", ... or "" (SQS queues, SNS topics)
    resource: str  # the name after the type (may hold more "/" parts, e.g. a table's stream)

    @property
    def name(self) -> str:
        """The resource's own name: table, stream, queue or topic."""
        return self.resource.split("/", 1)[0]

    def __str__(self) -> str:
        sep = "/" if self.resource_type else ""
        return f"arn:{self.partition}:{self.service}:{self.region}:{self.account}:{self.resource_type}{sep}{self.resource}"


def parse_arn(arn: str, setting: str | None = None) -> Arn:
    """Split an ARN; a malformed one raises ``SettingsError`` naming the value (and setting, if known)."""
    where = f"setting {setting} value" if setting else "value"
    parts = arn.split(":", 5) if isinstance(arn, str) else []
    if len(parts) != 6 or parts[0] != "arn" or not parts[1] or not parts[2] or not parts[5]:
        raise SettingsError(
            f"{where} {arn!r} is not an AWS ARN; expected arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE, "
            f"e.g. arn:aws:kinesis:us-east-1:123456789012:stream/fsmlog"
        )
    _, partition, service, region, account, rest = parts
    if "/" in rest:
        rtype, _, resource = rest.partition("/")
    elif ":" in rest:
        rtype, _, resource = rest.partition(":")
    else:
        rtype, resource = "", rest
    if not resource:
        raise SettingsError(f"{where} {arn!r} names no resource after {rtype!r}")
    return Arn(partition, service, region, account, rtype, resource)


def require(arn: Arn, service: str, resource_type: str, target: str) -> None:
    """Refuse an ARN of the wrong service or resource type with a message naming the value."""
    if arn.service != service or arn.resource_type != resource_type:
        want = f"{resource_type}/NAME" if resource_type else "NAME"
        raise SettingsError(
            f"value {target!r} is not a {service} ARN of the form arn:aws:{service}:REGION:ACCOUNT:{want}"
        )


# --- clients -----------------------------------------------------------------------------------------

_clients: dict[tuple[str, str, str | None], Any] = {}
_clients_lock = threading.Lock()


def endpoint_for(target: str | None, settings: Settings | None) -> str | None:
    endpoints = (settings.ENDPOINTS if settings is not None else None) or {}
    if target and target in endpoints:
        return str(endpoints[target])
    return os.environ.get("AWS_ENDPOINT_URL") or None


def region_for(target: str | None, settings: Settings | None) -> str:
    if target and target.startswith("arn:"):
        parts = target.split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    region = settings.AWS_REGION if settings is not None else None
    return region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"


def _count(service: str, model: Any = None, **_: Any) -> None:
    API_CALLS[(service, model.name)] += 1


def client(service: str, arn_or_target: str | None, settings: Settings | None) -> Any:
    """A boto3 client for ``service``, cached per (service, region, endpoint); thread-safe to share."""
    region = region_for(arn_or_target, settings)
    endpoint = endpoint_for(arn_or_target, settings)
    key = (service, region, endpoint)
    found = _clients.get(key)
    if found is not None:
        return found
    with _clients_lock:
        found = _clients.get(key)
        if found is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                retries={"mode": "standard", "total_max_attempts": 1},  # one try: call() does the retrying
                max_pool_connections=128,  # a batch's calls go out together (handlers/cache/dynamodb.py POOL)
                tcp_keepalive=True,
            )
            found = boto3.session.Session().client(
                service, region_name=region, endpoint_url=endpoint, config=config
            )
            found.meta.events.register("before-call", functools.partial(_count, service))
            _clients[key] = found
    return found


def clear_clients() -> None:
    """Forget cached clients (tests that change credentials or endpoints)."""
    with _clients_lock:
        _clients.clear()


# --- calls -------------------------------------------------------------------------------------------


def _camel(operation: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in operation.split("_")) if "_" in operation or operation.islower() else operation


def missing_message(service: str, resource: str) -> str:
    return (
        f"{service} resource {resource} does not exist (or is not visible to these credentials and region); "
        f"create it with `fsmlog resources create`, or fix the setting that names it"
    )


def translate(exc: BaseException, service: str, operation: str, resource: str) -> BackendError:
    """Turn a botocore error into fsmlog's, with ``service``, ``operation`` and ``code`` filled in:
    transient ones (and waits that never settled) into ``ServiceUnavailable``."""
    from botocore.exceptions import ClientError, WaiterError

    op = getattr(exc, "operation_name", None) or _camel(operation)
    fields: dict[str, Any] = {"service": service, "operation": op, "resource": resource}
    if isinstance(exc, ClientError):
        code = error_code(exc)
        fields["code"] = code or None
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        if code in MISSING_CODES:
            return BackendError(f"{op} failed: {missing_message(service, resource)} ({code}: {message})", **fields)
        if is_transient(exc):
            return ServiceUnavailable(
                f"{service} {op} on {resource} kept failing after {ATTEMPTS} attempts: {code}: {message}", **fields
            )
        return BackendError(f"{service} {op} on {resource} failed: {code}: {message}", **fields)
    if isinstance(exc, WaiterError):
        code = error_code(exc)
        fields["code"] = code or None
        reason = exc.kwargs.get("reason", "")
        if code in MISSING_CODES:
            return BackendError(f"{op} failed: {missing_message(service, resource)} ({reason})", **fields)
        if not code or is_transient(exc):
            return ServiceUnavailable(f"{service} {resource} did not settle while waiting ({op}): {reason}", **fields)
        return BackendError(f"{service} {op} on {resource} failed: {reason}", **fields)
    fields["code"] = type(exc).__name__
    if is_transient(exc):
        return ServiceUnavailable(f"{service} {op} on {resource} could not reach the service: {exc}", **fields)
    return BackendError(f"{service} {op} on {resource} failed: {exc}", **fields)  # credentials, parameters, ...


def call(fn: Callable[..., T], *args: Any, resource: str = "?", service: str | None = None,
         operation: str | None = None, **kwargs: Any) -> T:
    """Run one boto3 client method under the retry policy (:mod:`eventlog.retrying`).

    ``fn`` is usually a bound client method (its client names the service, its
    name the operation); ``resource`` (an ARN) goes into error messages and fields.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    if service is None:
        owner = getattr(fn, "__self__", None)
        model = getattr(getattr(owner, "meta", None), "service_model", None)
        service = getattr(model, "service_name", "aws")
    if operation is None:
        operation = getattr(fn, "__name__", "call")
    try:
        return retrying(sleep=_pause)(fn, *args, **kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, service, operation, resource) from exc


@functools.cache
def _botocore_data() -> Any:
    """A botocore session used only to read botocore's service data (its loader caches what it read)."""
    import botocore.session

    return botocore.session.get_session()


@functools.cache
def _paging(service: str, operation: str) -> tuple[dict[str, Any], Any]:
    """boto3's paginator definition of ``operation`` and the operation's model, from botocore's data."""
    from botocore import xform_name

    session = _botocore_data()
    model = session.get_service_model(service)
    name = next(op for op in model.operation_names if xform_name(op) == operation)
    return session.get_paginator_model(service).get_paginator(name), model.operation_model(name)


_STREAM_NAMING = ("StreamName", "StreamARN", "StreamCreationTimestamp")


def _page_params(service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """Kinesis refuses a ListShards NextToken beside the stream's name (the token names the stream),
    while boto3's paginator repeats every parameter on each page (botocore#2009): drop the name."""
    if service == "kinesis" and operation == "list_shards" and params.get("NextToken"):
        return {k: v for k, v in params.items() if k not in _STREAM_NAMING}
    return params


def pages(api: Callable[..., Any], service: str, operation: str, *, page_size: int | None = None,
          **params: Any) -> Iterator[dict[str, Any]]:
    """The pages of a List/Scan/Query call, in order, from boto3's paginator for ``operation``.

    ``api(operation, **params)`` makes each page's call (an :class:`Api`, so
    through :func:`call`): a throttled page is retried on its own, the pages
    before it are not fetched again, and failures arrive as fsmlog errors.
    ``page_size`` is the paginator's ``PageSize`` (``None``: the service's
    default). Stop iterating to stop fetching.
    """
    from botocore.paginate import Paginator

    config, model = _paging(service, operation)
    paginator = Paginator(lambda **kwargs: api(operation, **_page_params(service, operation, kwargs)), config, model)
    sizes = [n for n in (page_size, PAGE_SIZE_CAP) if n]
    yield from paginator.paginate(**params, PaginationConfig={"PageSize": min(sizes)} if sizes else {})


def wait(client: Any, waiter: str, *, resource: str, **params: Any) -> None:
    """Block until boto3's waiter ``waiter`` (``table_exists``, ``stream_not_exists`` ...) succeeds.

    Polls every :data:`WAITER_DELAY` seconds, at most :data:`WAITER_ATTEMPTS`
    times; a poll refused by throttling starts the wait again under the retry
    policy. A wait that never settles raises ``ServiceUnavailable``.
    """
    config = {"Delay": WAITER_DELAY, "MaxAttempts": WAITER_ATTEMPTS}
    call(lambda: client.get_waiter(waiter).wait(**params, WaiterConfig=config), resource=resource,
         service=client.meta.service_model.service_name, operation=waiter)


def retried(service: str, resource_attr: str = "arn") -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator form of :func:`call`: the whole method is retried as one unit (it must be safe to
    repeat); ``resource_attr`` names the instance attribute holding the ARN for messages."""

    def wrap(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def inner(self: Any, *args: Any, **kwargs: Any) -> T:
            return call(functools.partial(method, self), *args, resource=str(getattr(self, resource_attr, "?")),
                        service=service, operation=method.__name__, **kwargs)

        return inner

    return wrap


@dataclass
class Api:
    """One backend's binding of a client to its resource: ``api("put_records", ...)``."""

    service: str
    arn: str
    client: Any

    def __call__(self, operation: str, **params: Any) -> Any:
        return call(getattr(self.client, operation), resource=self.arn, **params)

    def pages(self, operation: str, *, page_size: int | None = None, **params: Any) -> Iterator[dict[str, Any]]:
        """:func:`pages` of ``operation`` on this resource."""
        return pages(self, self.service, operation, page_size=page_size, **params)

    def wait(self, waiter: str, **params: Any) -> None:
        """:func:`wait` on this resource."""
        wait(self.client, waiter, resource=self.arn, **params)


def api(service: str, target: str, settings: Settings | None, client_override: Any = None) -> Api:
    return Api(service, target, client_override if client_override is not None else client(service, target, settings))


# --- batch entries -----------------------------------------------------------------------------------


def send_entries(
    entries: Sequence[T],
    send: Callable[[list[T]], dict[int, tuple[str, str, bool]]],
    *,
    service: str,
    operation: str,
    resource: str,
    attempts: int = ATTEMPTS,
) -> None:
    """Send ``entries`` with ``send`` until none is refused.

    ``send`` gets a list and returns the refused ones by index into that list as
    ``{i: (code, message, permanent)}``. Refused entries are resent (only those,
    in order) by the retry policy; a permanent refusal (a sender fault) raises
    ``BackendError`` at once, and refusals still left after ``attempts`` raise
    ``ServiceUnavailable`` with the last refusal's code. Nothing is ever dropped silently.
    """
    fields: dict[str, Any] = {"service": service, "operation": operation, "resource": resource}
    last = ("", "")

    def send_pending(pending: list[int]) -> list[int]:
        nonlocal last
        failed = send([entries[i] for i in pending])
        for code, message, permanent in failed.values():
            last = (code, message)
            if permanent:
                raise BackendError(f"{service} {operation} on {resource} refused an entry: {code}: {message}",
                                   code=code or None, **fields)
        return [pending[i] for i in sorted(failed)]

    left = resend_refused(send_pending, range(len(entries)), sleep=_pause, attempts=attempts)
    if left:
        raise ServiceUnavailable(
            f"{service} {operation} on {resource}: {len(left)} entr{'y' if len(left) == 1 else 'ies'} "
            f"still refused after {attempts} attempts ({last[0]}: {last[1]})",
            code=last[0] or None, **fields,
        )


def chunks(items: Sequence[T], count: int, size: Callable[[T], int] | None = None,
           max_bytes: int | None = None) -> Iterable[list[T]]:
    """Consecutive groups of at most ``count`` items and (if given) ``max_bytes`` total size."""
    group: list[T] = []
    total = 0
    for item in items:
        n = size(item) if size is not None else 0
        if group and (len(group) >= count or (max_bytes is not None and total + n > max_bytes)):
            yield group
            group, total = [], 0
        group.append(item)
        total += n
    if group:
        yield group


# --- DynamoDB helpers ----------------------------------------------------------------------------------

DYNAMODB_ITEM_BYTES = 400 * 1024
_BLOB_ROOM = DYNAMODB_ITEM_BYTES - 8 * 1024  # the other attributes and names of one item
_COMPRESS_OVER = 32 * 1024


def pack_blob(data: bytes, what: str) -> dict[str, Any]:
    """Attributes storing ``data`` in one DynamoDB item: zlib-compressed when large, refused when it still
    does not fit (DynamoDB items are at most 400 KB)."""
    if len(data) <= _COMPRESS_OVER:
        return {"data": {"B": data}}
    packed = zlib.compress(data, 6)
    if len(packed) > _BLOB_ROOM:
        raise RecordTooLarge(
            f"{what} is {len(data)} bytes ({len(packed)} compressed), over DynamoDB's "
            f"{DYNAMODB_ITEM_BYTES}-byte item limit"
        )
    return {"data": {"B": packed}, "enc": {"S": "zlib"}}


def unpack_blob(item: dict[str, Any]) -> bytes:
    raw = item["data"]["B"]
    if item.get("enc", {}).get("S") == "zlib":
        return zlib.decompress(raw)
    return bytes(raw)


def batch_write(ddb: Api, table: str, requests: Sequence[dict[str, Any]]) -> None:
    """BatchWriteItem in groups of 25; the retry policy resends UnprocessedItems until none are left."""

    def send(pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = ddb("batch_write_item", RequestItems={table: pending})
        return (response.get("UnprocessedItems") or {}).get(table, [])

    for group in chunks(requests, 25):
        left = resend_refused(send, group, sleep=_pause)
        if left:
            raise ServiceUnavailable(
                f"dynamodb BatchWriteItem on {ddb.arn}: {len(left)} items still unprocessed after {ATTEMPTS} attempts",
                service="dynamodb", operation="BatchWriteItem", resource=ddb.arn,
            )


def ceil_delay(due: float, now: float, cap: int) -> int:
    """Whole seconds to wait from ``now`` until ``due``, within [0, cap]."""
    return max(0, min(cap, math.ceil(due - now)))


def create_table(ddb: Api, table: str, keys: Sequence[tuple[str, str, str]], *,
                 indexes: Sequence[tuple[str, Sequence[tuple[str, str, str]]]] = (), stream: bool = False) -> None:
    """Create an on-demand table if it is missing and wait (boto3's ``table_exists`` waiter) until it is ACTIVE.

    ``keys`` are ``(name, "HASH"|"RANGE", "S"|"N"|"B")``; ``indexes`` are
    ``(index name, keys)`` global secondary indexes projecting every attribute.
    """
    attrs: dict[str, str] = {}
    for name, _, kind in [*keys, *(k for _, ks in indexes for k in ks)]:
        attrs[name] = kind
    params: dict[str, Any] = {
        "TableName": table,
        "KeySchema": [{"AttributeName": n, "KeyType": t} for n, t, _ in keys],
        "AttributeDefinitions": [{"AttributeName": n, "AttributeType": k} for n, k in attrs.items()],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if indexes:
        params["GlobalSecondaryIndexes"] = [
            {"IndexName": name, "KeySchema": [{"AttributeName": n, "KeyType": t} for n, t, _ in ks],
             "Projection": {"ProjectionType": "ALL"}}
            for name, ks in indexes
        ]
    if stream:
        params["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    try:
        ddb("create_table", **params)
    except BackendError as exc:
        if exc.code != "ResourceInUseException":  # in use: it exists already (or is being created)
            raise
    ddb.wait("table_exists", TableName=table)


# --- SNS / SQS message batches -------------------------------------------------------------------------

MESSAGE_BYTES = 256 * 1024  # one SNS/SQS message, and one whole batch
MESSAGE_BATCH = 10


def b64len(n: int) -> int:
    return 4 * ((n + 2) // 3)


def send_messages(
    items: Sequence[tuple[str, bytes, dict[str, Any]]],
    send_batch: Callable[[list[dict[str, Any]]], dict[str, Any]],
    *,
    service: str,
    operation: str,
    resource: str,
    body_key: str,
    fifo: bool,
) -> list[str]:
    """Send ``(key, data, extra entry fields)`` as base64 bodies in batches of 10 / 256 KiB.

    ``send_batch`` makes the call with a list of entries and returns the
    response (``Successful``/``Failed``). Refused entries are resent (sender
    faults raise at once). Returns the message ids in order. FIFO entries get
    ``MessageGroupId`` = key and a content-derived deduplication id, so a resend
    after an ambiguous failure is not delivered twice.
    """
    import base64
    import hashlib

    for key, data, extra in items:
        size = b64len(len(data)) + sum(len(str(v)) for v in extra.values())
        if size > MESSAGE_BYTES:
            raise RecordTooLarge(
                f"record for key {key!r} is {len(data)} bytes ({size} as a message), over the "
                f"{MESSAGE_BYTES}-byte {service} message limit ({resource})"
            )
    ids = [""] * len(items)
    entries: list[tuple[int, dict[str, Any]]] = []
    for i, (key, data, extra) in enumerate(items):
        entry = {body_key: base64.b64encode(data).decode("ascii"), **extra}
        if fifo:
            entry["MessageGroupId"] = key
            entry["MessageDeduplicationId"] = hashlib.sha256(key.encode() + b"\0" + data).hexdigest()
        entries.append((i, entry))

    def send(group: list[tuple[int, dict[str, Any]]]) -> dict[int, tuple[str, str, bool]]:
        response = send_batch([{"Id": str(n), **entry} for n, (_, entry) in enumerate(group)])
        for ok in response.get("Successful", []):
            ids[group[int(ok["Id"])][0]] = ok.get("MessageId", "")
        return {
            int(f["Id"]): (f.get("Code", ""), f.get("Message", ""), bool(f.get("SenderFault")))
            for f in response.get("Failed", [])
        }

    size_of = lambda e: len(e[1][body_key]) + 200  # noqa: E731 - entry fields beside the body
    for group in chunks(entries, MESSAGE_BATCH, size_of, MESSAGE_BYTES):
        send_entries(group, send, service=service, operation=operation, resource=resource)
    return ids


class DynamoDBTable:
    """Base of the backends that keep their data in one DynamoDB table.

    Holds the ARN, the table name and the call wrapper, and creates the table
    from the class's ``KEYS`` (``(name, "HASH"|"RANGE", "S"|"N"|"B")``),
    ``INDEXES`` and ``STREAM`` — the same declarations ``fsmlog resources``
    and ``fsmlog template`` read.
    """

    KEYS: tuple[tuple[str, str, str], ...] = ()
    INDEXES: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = ()
    STREAM = False

    def __init__(self, arn: str, settings: Settings | None = None, *, client: Any = None) -> None:
        parsed = parse_arn(arn)
        require(parsed, "dynamodb", "table", arn)
        self.arn = arn
        self.name = arn
        self.table = parsed.name
        self._api = api("dynamodb", arn, settings, client)

    @classmethod
    def from_target(cls, target: str, settings: Settings) -> Any:
        return cls(target, settings)

    @classmethod
    def create(cls, target: str, settings: Settings) -> Any:
        """Create the table (with its indexes or stream) if missing; for ``fsmlog resources create`` and tests."""
        store = cls(target, settings)
        create_table(store._api, store.table, cls.KEYS, indexes=cls.INDEXES, stream=cls.STREAM)
        return store
