"""``BackendError`` carries ``service``, ``operation`` and ``code``; callers branch on ``code``, never on text.

No server: botocore errors are built by hand, and the backends get a botocore
``Stubber`` on a real client (it answers before anything is sent).
"""

from __future__ import annotations

import pickle
import random
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, WaiterError
from botocore.stub import Stubber

from eventlog import aws
from eventlog.chaos import ChaosProxy, with_chaos
from eventlog.errors import BackendError, ChaosError, FsmlogError, ServiceUnavailable
from eventlog.settings import load_settings
from handlers.deadletters.dynamodb import DynamoDBDeadLetters
from projections.checkpoints.dynamodb import DynamoDBCheckpoints

TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/unit"


@pytest.fixture(autouse=True)
def no_backoff_sleep(monkeypatch):
    monkeypatch.setattr(aws, "sleep", lambda seconds: None)


def client_error(code: str, operation: str, message: str = "", status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


def stubbed(service: str) -> tuple[Any, Stubber]:
    client = boto3.session.Session().client(service, region_name="us-east-1", aws_access_key_id="testing",
                                            aws_secret_access_key="testing")
    stub = Stubber(client)
    stub.activate()
    return client, stub


# --- the error itself ------------------------------------------------------------------------------------


def test_a_backend_error_keeps_its_positional_message_and_optional_fields():
    plain = BackendError("dynamodb put failed")
    assert str(plain) == "dynamodb put failed"
    assert (plain.service, plain.operation, plain.code, plain.resource) == (None, None, None, None)
    full = ServiceUnavailable("down", service="kinesis", operation="PutRecords", code="ThrottlingException",
                              resource="arn:aws:kinesis:us-east-1:1:stream/s")
    assert isinstance(full, BackendError) and isinstance(full, FsmlogError)
    assert (full.service, full.operation, full.code) == ("kinesis", "PutRecords", "ThrottlingException")


def test_fields_survive_pickling():
    again = pickle.loads(pickle.dumps(ChaosError("boom", code="Boom", service="sqlite", operation="put",
                                                 resource="sqlite:///x")))
    assert type(again) is ChaosError and str(again) == "boom"
    assert (again.code, again.service, again.operation, again.resource) == ("Boom", "sqlite", "put", "sqlite:///x")


# --- from botocore ---------------------------------------------------------------------------------------


def test_call_fills_the_fields_from_a_client_error():
    def refuse(**_: Any) -> None:
        raise client_error("ConditionalCheckFailedException", "PutItem", "The conditional request failed")

    with pytest.raises(BackendError) as info:
        aws.call(refuse, resource=TABLE_ARN, service="dynamodb", operation="put_item")
    err = info.value
    assert not isinstance(err, ServiceUnavailable)
    assert (err.service, err.operation, err.code, err.resource) == (
        "dynamodb", "PutItem", "ConditionalCheckFailedException", TABLE_ARN)


def test_throttling_that_never_ends_is_service_unavailable_with_its_code():
    calls = []

    def throttled() -> None:
        calls.append(1)
        raise client_error("ProvisionedThroughputExceededException", "PutRecords", "Rate exceeded")

    with pytest.raises(ServiceUnavailable) as info:
        aws.call(throttled, resource="arn:aws:kinesis:us-east-1:1:stream/s", service="kinesis")
    assert len(calls) == aws.ATTEMPTS
    assert (info.value.code, info.value.operation) == ("ProvisionedThroughputExceededException", "PutRecords")


def test_a_missing_resource_has_its_code_and_is_not_unavailable():
    err = aws.translate(client_error("ResourceNotFoundException", "GetItem", "Requested resource not found"),
                        "dynamodb", "get_item", TABLE_ARN)
    assert type(err) is BackendError and err.code == "ResourceNotFoundException"
    assert "fsmlog resources create" in str(err)


def test_a_lost_connection_is_coded_by_its_botocore_class():
    err = aws.translate(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "sqs", "send_message_batch",
                        "arn:aws:sqs:us-east-1:1:q")
    assert isinstance(err, ServiceUnavailable)
    assert (err.code, err.operation) == ("EndpointConnectionError", "SendMessageBatch")


def test_a_wait_that_never_settles_is_service_unavailable_and_a_refused_one_keeps_its_code():
    timed_out = WaiterError(name="TableExists", reason="Max attempts exceeded",
                            last_response={"Table": {"TableStatus": "CREATING"}})
    err = aws.translate(timed_out, "dynamodb", "table_exists", TABLE_ARN)
    assert isinstance(err, ServiceUnavailable) and err.operation == "TableExists" and err.code is None
    denied = WaiterError(name="TableExists", reason="An error occurred (AccessDeniedException): no",
                         last_response={"Error": {"Code": "AccessDeniedException", "Message": "no"}})
    err = aws.translate(denied, "dynamodb", "table_exists", TABLE_ARN)
    assert type(err) is BackendError and err.code == "AccessDeniedException"


# --- from chaos --------------------------------------------------------------------------------------------


def test_an_injected_fault_is_coded_by_the_exception_it_names(tmp_path):
    from handlers.environment.sqlite import SqliteEnvironment

    target = f"sqlite:///{tmp_path / 'env.db'}"
    settings = load_settings(environ={}, AWS_CHAOS={target: {"ThrottlingException": 1.0}})
    env = with_chaos(SqliteEnvironment(target), target, settings, rng=random.Random(1))
    assert isinstance(env, ChaosProxy)
    with pytest.raises(ChaosError) as info:
        env.put("x", b"1")
    assert (info.value.code, info.value.operation, info.value.resource, info.value.service) == (
        "ThrottlingException", "put", target, "sqlite")


# --- callers branch on the code, whatever the message says ----------------------------------------------------


def test_a_refused_checkpoint_is_told_by_its_code_not_its_message():
    client, stub = stubbed("dynamodb")
    stub.add_client_error("put_item", service_error_code="ConditionalCheckFailedException",
                          service_message="(a message that names no code at all)")
    stub.add_client_error("put_item", service_error_code="ValidationException",
                          service_message="ConditionalCheckFailed is only mentioned here")
    store = DynamoDBCheckpoints(TABLE_ARN, client=client)
    assert store.save("cid", 2, b"v2") is False
    with pytest.raises(BackendError) as info:
        store.save("cid", 3, b"v3")
    assert info.value.code == "ValidationException"
    stub.assert_no_pending_responses()


def test_parking_a_letter_twice_is_told_by_its_code_not_its_message():
    client, stub = stubbed("dynamodb")
    stub.add_client_error("put_item", service_error_code="ConditionalCheckFailedException", service_message="")
    stub.add_client_error("put_item", service_error_code="ValidationException",
                          service_message="ConditionalCheckFailed")
    letters = DynamoDBDeadLetters(TABLE_ARN, client=client)
    assert letters.park("why", "src", "pos", b"data", 1.0)  # already parked: kept, no error
    with pytest.raises(BackendError) as info:
        letters.park("why", "src", "pos", b"data", 1.0)
    assert info.value.code == "ValidationException"


def test_creating_a_table_that_exists_is_told_by_its_code_and_then_waited_for():
    client, stub = stubbed("dynamodb")
    stub.add_client_error("create_table", service_error_code="ResourceInUseException", service_message="busy")
    stub.add_response("describe_table", {"Table": {"TableStatus": "ACTIVE"}}, {"TableName": "unit"})
    aws.create_table(aws.api("dynamodb", TABLE_ARN, None, client), "unit", (("id", "HASH", "S"),))
    stub.assert_no_pending_responses()
    stub.add_client_error("create_table", service_error_code="AccessDeniedException",
                          service_message="ResourceInUseException")  # the text alone is not enough
    with pytest.raises(BackendError) as info:
        aws.create_table(aws.api("dynamodb", TABLE_ARN, None, client), "unit", (("id", "HASH", "S"),))
    assert info.value.code == "AccessDeniedException"


def test_no_caller_matches_error_text():
    """The production code never looks for an error code inside a message."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    pattern = re.compile(r"""["'][A-Za-z.]*(Exception|Exceeded|NonExistentQueue|ConditionalCheck)[A-Za-z]*["']\s+(not\s+)?in\s+str\(""")
    offenders = []
    for folder in ("eventlog", "handlers", "projections", "replay", "fsmlog"):
        for path in (root / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert offenders == []
