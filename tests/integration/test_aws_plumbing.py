"""The AWS plumbing layer: boto3 paginators and waiters, and the one retry policy (eventlog.retrying).

Paging is shown on moto with pages shrunk by ``aws.PAGE_SIZE_CAP``; what moto
cannot show (Kinesis' rule that a ListShards NextToken travels without the
stream's name, a table that takes a while to settle, throttled calls and
refused batch entries) is played by a botocore ``Stubber`` on a real client,
which also checks every request's parameters.
"""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from eventlog import aws, retrying
from eventlog.backends.kinesis import KinesisLog
from eventlog.backends.sqs import SqsLog
from eventlog.errors import BackendError, ServiceUnavailable
from eventlog.log import OutRecord
from handlers.deadletters.dynamodb import DynamoDBDeadLetters
from handlers.retries import ScheduledRetry
from handlers.retries.dynamodb import DynamoDBRetries
from projections.checkpoints.dynamodb import DynamoDBCheckpoints
from replay.rebuild import list_shards
from replay.scan import snapshot_lister
from tests.fixtures.servers import ACCOUNT, REGION, arn_for, make_resources, settings_for

pytestmark = pytest.mark.integration

STREAM = "plumbing"
STREAM_ARN = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{STREAM}"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/plumbing"


@pytest.fixture(autouse=True)
def pauses(monkeypatch) -> list[float]:
    """The retry policy's pauses, recorded instead of slept."""
    seen: list[float] = []
    monkeypatch.setattr(aws, "sleep", seen.append)
    return seen


def fresh(moto_server: str, kind: str, **options: Any) -> tuple[str, Any]:
    arn = make_resources(moto_server, kind, **options)[kind]
    return arn, settings_for(moto_server, [arn])


def calls_during(fn, *args, **kwargs) -> tuple[Any, Counter]:
    before = Counter(aws.API_CALLS)
    result = fn(*args, **kwargs)
    after = Counter(aws.API_CALLS)
    after.subtract(before)
    return result, +after


def stubbed(service: str) -> tuple[Any, Stubber]:
    """A real client whose calls the Stubber answers (nothing is sent)."""
    client = boto3.session.Session().client(service, region_name=REGION, aws_access_key_id="testing",
                                            aws_secret_access_key="testing")
    stub = Stubber(client)
    stub.activate()
    return client, stub


def shard(n: int) -> dict[str, Any]:
    return {"ShardId": f"shardId-{n:012d}", "HashKeyRange": {"StartingHashKey": str(n * 100),
                                                             "EndingHashKey": str(n * 100 + 99)},
            "SequenceNumberRange": {"StartingSequenceNumber": "1"}}


# --- paginators ---------------------------------------------------------------------------------------


def test_dead_letters_are_listed_across_scan_pages(moto_server, monkeypatch):
    letters = DynamoDBDeadLetters(*fresh(moto_server, "dead_letters"))
    for i in range(7):
        letters.park(f"reason {i}", "src", f"pos-{i}", bytes([i]), float(i))
    monkeypatch.setattr(aws, "PAGE_SIZE_CAP", 2)
    listed, counted = calls_during(letters.list)
    assert [d.time for d in listed] == [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    assert counted[("dynamodb", "Scan")] == 4  # 2 + 2 + 2 + 1
    some, counted = calls_during(letters.list, 3)
    assert len(some) == 3 and counted[("dynamodb", "Scan")] == 2  # stops fetching once it has enough


def test_due_retries_are_found_across_query_pages(moto_server, monkeypatch):
    store = DynamoDBRetries(*fresh(moto_server, "retries"))
    now = 2_000_000_000.0
    store.schedule([ScheduledRetry(f"cid-{i}", f"retry-{i}".encode(), now - i) for i in range(13)])
    monkeypatch.setattr(aws, "PAGE_SIZE_CAP", 2)
    due, counted = calls_during(store.due, now, 100)
    assert sorted(d.data for d in due) == sorted(f"retry-{i}".encode() for i in range(13))
    assert counted[("dynamodb", "Query")] > 4  # 13 items in 4 index shards: some shard took more than one page


def test_replay_lists_every_snapshot_across_scan_pages(moto_server, monkeypatch):
    store = DynamoDBCheckpoints(*fresh(moto_server, "checkpoints"))
    for i in range(5):
        store.save(f"cid-{i}", 1, f"snapshot-{i}".encode())
    monkeypatch.setattr(aws, "PAGE_SIZE_CAP", 2)
    listed, counted = calls_during(lambda: sorted(snapshot_lister(store)()))
    assert listed == [(f"cid-{i}", f"snapshot-{i}".encode()) for i in range(5)]
    assert counted[("dynamodb", "Scan")] == 3


def test_shards_are_listed_by_the_paginator_on_moto(moto_server):
    arn, settings = fresh(moto_server, "kinesis", shards=5)
    log = KinesisLog(arn, settings)
    ranges, counted = calls_during(log.shard_ranges)
    assert [s for s, _, _ in ranges] == [f"shardId-{n:012d}" for n in range(5)]
    assert counted[("kinesis", "ListShards")] == 1


def test_a_listshards_next_token_travels_without_the_stream_name(monkeypatch):
    """AWS refuses ListShards with NextToken beside StreamName; boto3's paginator would send both."""
    client, stub = stubbed("kinesis")
    monkeypatch.setattr(aws, "PAGE_SIZE_CAP", 2)
    for _ in range(2):  # once for KinesisLog.shard_ranges, once for replay's list_shards
        stub.add_response("list_shards", {"Shards": [shard(3), shard(1)], "NextToken": "t1"},
                          {"StreamName": STREAM, "MaxResults": 2})
        stub.add_response("list_shards", {"Shards": [shard(0), shard(4)], "NextToken": "t2"},
                          {"NextToken": "t1", "MaxResults": 2})
        stub.add_response("list_shards", {"Shards": [shard(2)]}, {"NextToken": "t2", "MaxResults": 2})
    log = KinesisLog(STREAM_ARN, client=client)
    assert log.shards() == [f"shardId-{n:012d}" for n in range(5)]
    assert [s["ShardId"] for s in list_shards(client, STREAM)] == [f"shardId-{n:012d}" for n in (3, 1, 0, 4, 2)]
    stub.assert_no_pending_responses()


def test_a_throttled_page_is_fetched_again_alone(monkeypatch, pauses):
    client, stub = stubbed("kinesis")
    monkeypatch.setattr(aws, "PAGE_SIZE_CAP", 2)
    stub.add_response("list_shards", {"Shards": [shard(0), shard(1)], "NextToken": "t1"},
                      {"StreamName": STREAM, "MaxResults": 2})
    stub.add_client_error("list_shards", service_error_code="LimitExceededException", service_message="Rate",
                          expected_params={"NextToken": "t1", "MaxResults": 2})
    stub.add_response("list_shards", {"Shards": [shard(2)]}, {"NextToken": "t1", "MaxResults": 2})
    assert KinesisLog(STREAM_ARN, client=client).shards() == [f"shardId-{n:012d}" for n in range(3)]
    stub.assert_no_pending_responses()
    assert len(pauses) == 1


# --- waiters --------------------------------------------------------------------------------------------


def test_creating_tables_and_streams_waits_with_a_waiter(moto_server):
    arn = arn_for("checkpoints")
    settings = settings_for(moto_server, [arn])
    _, counted = calls_during(DynamoDBCheckpoints.create, arn, settings)
    assert counted == Counter({("dynamodb", "CreateTable"): 1, ("dynamodb", "DescribeTable"): 1})
    _, counted = calls_during(DynamoDBCheckpoints.create, arn, settings)  # exists: ResourceInUse, then the wait
    assert counted == Counter({("dynamodb", "CreateTable"): 1, ("dynamodb", "DescribeTable"): 1})
    stream = arn_for("kinesis")
    _, counted = calls_during(KinesisLog.create, stream, settings_for(moto_server, [stream]), shards=2)
    assert counted == Counter({("kinesis", "CreateStream"): 1, ("kinesis", "DescribeStream"): 1})


def test_the_table_waiter_polls_until_active(monkeypatch):
    client, stub = stubbed("dynamodb")
    monkeypatch.setattr(aws, "WAITER_DELAY", 0)
    stub.add_response("create_table", {"TableDescription": {"TableStatus": "CREATING"}})
    stub.add_client_error("describe_table", service_error_code="ResourceNotFoundException", service_message="")
    for status in ("CREATING", "CREATING", "ACTIVE"):
        stub.add_response("describe_table", {"Table": {"TableStatus": status}}, {"TableName": "plumbing"})
    aws.create_table(aws.api("dynamodb", TABLE_ARN, None, client), "plumbing", (("id", "HASH", "S"),))
    stub.assert_no_pending_responses()


def test_a_table_that_never_settles_is_service_unavailable(monkeypatch):
    client, stub = stubbed("dynamodb")
    monkeypatch.setattr(aws, "WAITER_DELAY", 0)
    monkeypatch.setattr(aws, "WAITER_ATTEMPTS", 3)
    for _ in range(3):
        stub.add_response("describe_table", {"Table": {"TableStatus": "CREATING"}}, {"TableName": "plumbing"})
    with pytest.raises(ServiceUnavailable) as info:
        aws.wait(client, "table_exists", resource=TABLE_ARN, TableName="plumbing")
    assert (info.value.service, info.value.operation, info.value.resource) == ("dynamodb", "TableExists", TABLE_ARN)


def test_a_throttled_poll_starts_the_wait_again(monkeypatch, pauses):
    client, stub = stubbed("dynamodb")
    monkeypatch.setattr(aws, "WAITER_DELAY", 0)
    stub.add_client_error("describe_table", service_error_code="ThrottlingException", service_message="slow down")
    stub.add_response("describe_table", {"Table": {"TableStatus": "ACTIVE"}}, {"TableName": "plumbing"})
    aws.wait(client, "table_exists", resource=TABLE_ARN, TableName="plumbing")
    stub.assert_no_pending_responses()
    assert len(pauses) == 1


# --- the one retry policy --------------------------------------------------------------------------------


def put_ok(*shards_and_seqs: tuple[int, str]) -> dict[str, Any]:
    """A PutRecords answer with every record stored (the Stubber refuses ``FailedRecordCount: 0``)."""
    return {"Records": [{"ShardId": f"shardId-{s:012d}", "SequenceNumber": q} for s, q in shards_and_seqs]}


def test_throttled_put_records_are_retried_by_the_policy(pauses):
    client, stub = stubbed("kinesis")
    request = {"StreamName": STREAM, "Records": [{"Data": b"x", "PartitionKey": "cid"}]}
    for _ in range(2):
        stub.add_client_error("put_records", service_error_code="ProvisionedThroughputExceededException",
                              service_message="Rate exceeded for shard", expected_params=request)
    stub.add_response("put_records", put_ok((0, "7")), request)
    assert KinesisLog(STREAM_ARN, client=client).append([OutRecord("cid", b"x")]) == ["shardId-000000000000:7"]
    stub.assert_no_pending_responses()
    # full jitter under the policy's doubling ceiling
    assert len(pauses) == 2 and all(0 <= p <= retrying.BACKOFF_BASE * 2 ** n for n, p in enumerate(pauses))


def test_partly_refused_put_records_resend_only_the_refused_entries(pauses):
    client, stub = stubbed("kinesis")
    records = [OutRecord(f"cid-{i}", f"r{i}".encode()) for i in range(3)]
    wire = [{"Data": r.data, "PartitionKey": r.key} for r in records]
    stub.add_response("put_records", {"FailedRecordCount": 1, "Records": [
        {"ShardId": "shardId-000000000000", "SequenceNumber": "1"},
        {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"},
        {"ShardId": "shardId-000000000000", "SequenceNumber": "2"},
    ]}, {"StreamName": STREAM, "Records": wire})
    stub.add_response("put_records", put_ok((1, "3")), {"StreamName": STREAM, "Records": [wire[1]]})
    positions = KinesisLog(STREAM_ARN, client=client).append(records)
    assert positions == ["shardId-000000000000:1", "shardId-000000000001:3", "shardId-000000000000:2"]
    stub.assert_no_pending_responses()
    assert len(pauses) == 1


def test_entries_refused_on_every_attempt_raise_service_unavailable_with_the_code():
    client, stub = stubbed("kinesis")
    for _ in range(retrying.ATTEMPTS):
        stub.add_response("put_records", {"FailedRecordCount": 1, "Records": [
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"}]})
    with pytest.raises(ServiceUnavailable) as info:
        KinesisLog(STREAM_ARN, client=client).append([OutRecord("cid", b"x")])
    stub.assert_no_pending_responses()
    err = info.value
    assert (err.service, err.operation, err.code, err.resource) == (
        "kinesis", "PutRecords", "ProvisionedThroughputExceededException", STREAM_ARN)


def test_unprocessed_items_are_resent_by_the_policy_then_reported():
    client, stub = stubbed("dynamodb")
    put = {"PutRequest": {"Item": {"id": {"S": "a"}}}}
    other = {"PutRequest": {"Item": {"id": {"S": "b"}}}}
    stub.add_response("batch_write_item", {"UnprocessedItems": {"plumbing": [other]}},
                      {"RequestItems": {"plumbing": [put, other]}})
    stub.add_response("batch_write_item", {"UnprocessedItems": {}}, {"RequestItems": {"plumbing": [other]}})
    ddb = aws.api("dynamodb", TABLE_ARN, None, client)
    aws.batch_write(ddb, "plumbing", [put, other])
    stub.assert_no_pending_responses()
    for _ in range(retrying.ATTEMPTS):
        stub.add_response("batch_write_item", {"UnprocessedItems": {"plumbing": [other]}})
    with pytest.raises(ServiceUnavailable) as info:
        aws.batch_write(ddb, "plumbing", [other])
    stub.assert_no_pending_responses()
    assert (info.value.operation, info.value.resource) == ("BatchWriteItem", TABLE_ARN)


class RefusingSqs:
    """Passes through to moto; the first SendMessageBatch withholds entry "1" and reports it refused."""

    def __init__(self, real: Any, sender_fault: bool) -> None:
        self.real = real
        self.sender_fault = sender_fault
        self.sent: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def send_message_batch(self, **params: Any) -> dict[str, Any]:
        entries = params["Entries"]
        self.sent.append([base64.b64decode(e["MessageBody"]).decode() for e in entries])
        if len(self.sent) > 1:
            return self.real.send_message_batch(**params)
        kept = [e for e in entries if e["Id"] != "1"]
        response = self.real.send_message_batch(**{**params, "Entries": kept})
        failed = {"Id": "1", "SenderFault": self.sender_fault, "Code": "InternalError", "Message": "try again"}
        return {"Successful": response["Successful"], "Failed": [failed]}


def test_send_message_batch_failures_are_resent_and_sender_faults_raise_with_their_code(moto_server):
    arn, settings = fresh(moto_server, "sqs")
    double = RefusingSqs(aws.client("sqs", arn, settings), sender_fault=False)
    ids = SqsLog(arn, settings, client=double).append([OutRecord(f"k{i}", f"m{i}".encode()) for i in range(3)])
    assert double.sent == [["m0", "m1", "m2"], ["m1"]] and all(ids) and len(set(ids)) == 3
    faulty = RefusingSqs(aws.client("sqs", arn, settings), sender_fault=True)
    with pytest.raises(BackendError) as info:
        SqsLog(arn, settings, client=faulty).append([OutRecord(f"k{i}", b"x") for i in range(2)])
    assert not isinstance(info.value, ServiceUnavailable)
    assert (info.value.code, info.value.operation) == ("InternalError", "SendMessageBatch")


def test_kcl_checkpoints_retry_throttling_by_the_policy(tmp_path):
    pytest.importorskip("amazon_kclpy")
    from amazon_kclpy.checkpoint_error import CheckpointError

    from replay.kcl_processor import ReplayProcessor
    from replay.scan import ProjectionFile

    class Checkpointer:
        def __init__(self, *errors: str) -> None:
            self.errors = list(errors)
            self.calls = 0

        def checkpoint(self, *args: Any) -> None:
            self.calls += 1
            if self.errors:
                raise CheckpointError(self.errors.pop(0))

    slept: list[float] = []
    projections = ProjectionFile(tmp_path / f"p-{uuid.uuid4().hex}.db")
    try:
        proc = ReplayProcessor(projections, sleep=slept.append, checkpoint_retries=3, backoff_s=0.2)
        throttled = Checkpointer("ThrottlingException", "ThrottlingException")
        assert proc._checkpoint(throttled, "1", 0) is True
        assert throttled.calls == 3 and len(slept) == 2 and all(0 <= s <= 0.4 for s in slept)
        always = Checkpointer(*["ThrottlingException"] * 5)
        assert proc._checkpoint(always, "2", 0) is False and always.calls == 3
        gone = Checkpointer("ShutdownException")
        assert proc._checkpoint(gone, "3", 0) is False and gone.calls == 1
    finally:
        projections.close()
