"""The step path's DynamoDB client (eventlog.dynamodb_wire) answers exactly as boto3's client does.

Both clients make the same calls on moto's server over HTTP and must return
the same items and raise the same exception classes with the same fields; a
kept-alive connection the server dropped while idle is replaced without losing
the call; an unreachable endpoint is a transient error to the retry policy.
"""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from eventlog import retrying
from eventlog.dynamodb_wire import OBSERVERS, BinaryValueError, WireClient, item_client
from tests.fixtures.servers import REGION, free_port

pytestmark = pytest.mark.integration


def _boto(endpoint: str) -> Any:
    return boto3.session.Session().client("dynamodb", region_name=REGION, endpoint_url=endpoint,
                                          config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


@pytest.fixture
def table(moto_server: str) -> Iterator[tuple[Any, WireClient, str]]:
    boto = _boto(moto_server)
    name = f"wire-{uuid.uuid4().hex[:8]}"
    boto.create_table(TableName=name, KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                      AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                      BillingMode="PAY_PER_REQUEST")
    yield boto, WireClient(boto), name
    boto.delete_table(TableName=name)


def _without_meta(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def test_the_four_calls_answer_as_boto3_does(table: tuple[Any, WireClient, str]) -> None:
    boto, wire, name = table
    item = {"k": {"S": "a"}, "n": {"N": "7"}, "m": {"M": {"B": {"S": "a map key named B"}}},
            "l": {"L": [{"BOOL": True}, {"NULL": True}, {"SS": ["x", "y"]}]}}
    assert _without_meta(wire.put_item(TableName=name, Item=item)) == {}
    got_wire = wire.get_item(TableName=name, Key={"k": {"S": "a"}}, ConsistentRead=True)
    got_boto = boto.get_item(TableName=name, Key={"k": {"S": "a"}}, ConsistentRead=True)
    assert got_wire["Item"] == got_boto["Item"] == item
    assert got_wire["ResponseMetadata"]["HTTPStatusCode"] == 200

    updated = wire.update_item(TableName=name, Key={"k": {"S": "a"}}, UpdateExpression="SET n = n + :one",
                               ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="UPDATED_NEW")
    assert updated["Attributes"] == {"n": {"N": "8"}}

    request = {name: {"Keys": [{"k": {"S": "a"}}, {"k": {"S": "missing"}}], "ConsistentRead": True}}
    assert (_without_meta(wire.batch_get_item(RequestItems=request))
            == _without_meta(boto.batch_get_item(RequestItems=request)))


def test_a_refused_condition_is_boto3s_exception_with_the_old_item(table: tuple[Any, WireClient, str]) -> None:
    boto, wire, name = table
    wire.put_item(TableName=name, Item={"k": {"S": "b"}, "token": {"N": "3"}})
    params = dict(TableName=name, Key={"k": {"S": "b"}}, UpdateExpression="SET #t = :t",
                  ConditionExpression="#t < :t", ExpressionAttributeNames={"#t": "token"},
                  ExpressionAttributeValues={":t": {"N": "2"}}, ReturnValuesOnConditionCheckFailure="ALL_OLD")
    with pytest.raises(boto.exceptions.ConditionalCheckFailedException) as from_boto:
        boto.update_item(**params)
    with pytest.raises(boto.exceptions.ConditionalCheckFailedException) as from_wire:
        wire.update_item(**params)
    assert from_wire.value.response["Error"]["Code"] == from_boto.value.response["Error"]["Code"]
    assert from_wire.value.response["Item"] == from_boto.value.response["Item"] == {
        "k": {"S": "b"}, "token": {"N": "3"}}
    assert from_wire.value.operation_name == "UpdateItem"
    assert not retrying.is_transient(from_wire.value)


def test_a_missing_table_is_the_same_error_code(moto_server: str) -> None:
    boto = _boto(moto_server)
    with pytest.raises(ClientError) as caught:
        WireClient(boto).get_item(TableName="no-such-table", Key={"k": {"S": "a"}})
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert isinstance(caught.value, boto.exceptions.ResourceNotFoundException)


def test_bytes_are_refused_not_mangled(table: tuple[Any, WireClient, str]) -> None:
    _, wire, name = table
    with pytest.raises(BinaryValueError):
        wire.put_item(TableName=name, Item={"k": {"S": "c"}, "blob": {"B": b"\x00\x01"}})


def test_calls_are_counted_and_observed(table: tuple[Any, WireClient, str]) -> None:
    from eventlog.aws import API_CALLS

    _, wire, name = table
    seen: list[str] = []
    before = API_CALLS[("dynamodb", "GetItem")]
    OBSERVERS.append(lambda op, params, start, end, cpu: seen.append(op) if end >= start and cpu >= 0 else None)
    try:
        wire.get_item(TableName=name, Key={"k": {"S": "none"}})
    finally:
        OBSERVERS.clear()
    assert seen == ["GetItem"]
    assert API_CALLS[("dynamodb", "GetItem")] == before + 1


def test_an_unreachable_endpoint_is_transient() -> None:
    wire = WireClient(_boto(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(EndpointConnectionError) as caught:
        wire.get_item(TableName="t", Key={"k": {"S": "a"}})
    assert retrying.is_transient(caught.value)


class _ClosesAfterFirstReply(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, except that the first connection is dropped after its first reply
    without saying so: what a server does to a connection that stayed idle too long."""

    protocol_version = "HTTP/1.1"
    connections = 0
    requests = 0

    def setup(self) -> None:
        super().setup()
        type(self).connections += 1
        self.number = type(self).connections
        self.answered = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.number == 1 and self.answered == 1:
            self.close_connection = True  # drop it silently: no reply to the second request
            return
        type(self).requests += 1
        body = json.dumps({"Item": {"k": {"S": self.headers["X-Amz-Target"]}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.answered += 1

    def log_message(self, *args: Any) -> None:
        pass


def test_a_dropped_idle_connection_is_replaced_and_the_call_kept() -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _ClosesAfterFirstReply)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        wire = WireClient(_boto(f"http://127.0.0.1:{server.server_address[1]}"))
        for _ in range(3):
            assert wire.get_item(TableName="t", Key={"k": {"S": "a"}})["Item"] == {
                "k": {"S": "DynamoDB_20120810.GetItem"}}
        assert _ClosesAfterFirstReply.requests == 3
        assert _ClosesAfterFirstReply.connections == 2  # kept alive, replaced once
    finally:
        server.shutdown()
        server.server_close()


def test_a_proxy_in_the_environment_keeps_boto3(monkeypatch: pytest.MonkeyPatch, moto_server: str) -> None:
    boto = _boto("https://dynamodb.eu-west-1.amazonaws.com")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert item_client(boto) is boto
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("https_proxy", raising=False)
    assert isinstance(item_client(boto), WireClient)
