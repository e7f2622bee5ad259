"""AWS backends against a moto server over HTTP: batching, partial failures, conditions, chaining, claims.

Failures AWS produces under load (refused entries, throttling, unprocessed
items) are forced by thin wrappers around the real boto3 client: every call
still goes to moto; the wrapper only withholds part of a batch (and reports it
refused) or raises a throttling error before calling through.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections import Counter
from typing import Any

import pytest
from botocore.exceptions import ClientError

from eventlog import aws
from eventlog.backends.dynamodb import DynamoDBLog
from eventlog.backends.kinesis import KinesisLog
from eventlog.backends.sns import SnsLog
from eventlog.backends.sqs import SqsLog
from eventlog.errors import BackendError, RecordTooLarge, ServiceUnavailable, SettingsError
from eventlog.log import OutRecord, ReadableLog
from handlers.deadletters.dynamodb import DynamoDBDeadLetters
from handlers.environment.dynamodb import DynamoDBEnvironment
from handlers.retries import ScheduledRetry
from handlers.retries.dynamodb import DynamoDBRetries
from handlers.retries.sqs import DUE_ATTRIBUTE, SqsRetries
from handlers.retries.stream import StreamRetries
from handlers.wiring import open_backend
from projections.checkpoints.dynamodb import DynamoDBCheckpoints
from tests.fixtures.servers import arn_for, make_resources, settings_for

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def no_backoff_sleep(monkeypatch):
    """Backoff pauses are policy, not behaviour under test; skip them to keep the suite quick."""
    monkeypatch.setattr(aws, "sleep", lambda seconds: None)


def fresh(moto_server: str, kind: str, **options: Any) -> tuple[str, Any]:
    arn = make_resources(moto_server, kind, **options)[kind]
    return arn, settings_for(moto_server, [arn])


def calls_during(fn, *args, **kwargs) -> tuple[Any, Counter]:
    before = Counter(aws.API_CALLS)
    result = fn(*args, **kwargs)
    after = Counter(aws.API_CALLS)
    after.subtract(before)
    return result, +after


class Through:
    """Passes everything to the real client; subclasses override one operation."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.seen: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class RefusingKinesis(Through):
    """Sends only the odd entries of the first ``rounds`` PutRecords to moto and reports the even ones
    refused with ProvisionedThroughputExceededException, as Kinesis does under a hot shard."""

    def __init__(self, real: Any, rounds: int) -> None:
        super().__init__(real)
        self.rounds = rounds

    def put_records(self, **params: Any) -> dict[str, Any]:
        self.seen.append(params)
        if self.rounds <= 0:
            return self.real.put_records(**params)
        self.rounds -= 1
        records = params["Records"]
        accepted = self.real.put_records(**{**params, "Records": records[1::2]})["Records"] if len(records) > 1 else []
        results = []
        for i in range(len(records)):
            if i % 2:
                results.append(accepted[i // 2])
            else:
                results.append({"ErrorCode": "ProvisionedThroughputExceededException",
                                "ErrorMessage": "Rate exceeded for shard"})
        return {"FailedRecordCount": sum(1 for r in results if "ErrorCode" in r), "Records": results}


class ThrottledKinesis(Through):
    """Raises ThrottlingException for the first ``times`` PutRecords, then calls through."""

    def __init__(self, real: Any, times: int) -> None:
        super().__init__(real)
        self.times = times

    def put_records(self, **params: Any) -> dict[str, Any]:
        if self.times > 0:
            self.times -= 1
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutRecords")
        return self.real.put_records(**params)


class HalfUnprocessedDynamoDB(Through):
    """The first BatchWriteItem writes only the first half and returns the rest as UnprocessedItems."""

    def __init__(self, real: Any) -> None:
        super().__init__(real)
        self.first = True

    def batch_write_item(self, **params: Any) -> dict[str, Any]:
        self.seen.append(params)
        if not self.first:
            return self.real.batch_write_item(**params)
        self.first = False
        ((table, requests),) = params["RequestItems"].items()
        half = len(requests) // 2
        self.real.batch_write_item(RequestItems={table: requests[:half]})
        return {"UnprocessedItems": {table: requests[half:]}}


class RecordingSqs(Through):
    def send_message_batch(self, **params: Any) -> dict[str, Any]:
        self.seen.append(params)
        return self.real.send_message_batch(**params)


def kinesis_with(moto_server: str, wrap, shards: int = 1) -> tuple[KinesisLog, Any]:
    arn, settings = fresh(moto_server, "kinesis", shards=shards)
    double = wrap(aws.client("kinesis", arn, settings))
    return KinesisLog(arn, settings, client=double), double


# --- ARNs and clients ---------------------------------------------------------------------------------


def test_parse_arn_splits_every_part():
    arn = aws.parse_arn("arn:aws:dynamodb:eu-west-1:111122223333:table/orders/stream/2024-01-01T00:00:00.000")
    assert (arn.partition, arn.service, arn.region, arn.account, arn.resource_type) == (
        "aws", "dynamodb", "eu-west-1", "111122223333", "table")
    assert arn.name == "orders"
    queue = aws.parse_arn("arn:aws:sqs:us-east-1:111122223333:jobs.fifo")
    assert (queue.resource_type, queue.name) == ("", "jobs.fifo")


@pytest.mark.parametrize("value", ["", "orders", "arn:aws:kinesis:us-east-1", "arn::kinesis:r:a:stream/x",
                                   "arn:aws:dynamodb:us-east-1:1:table/"])
def test_malformed_arns_name_the_value_and_setting(value):
    with pytest.raises(SettingsError) as info:
        aws.parse_arn(value, "PRIMARY_STREAM_SOURCE")
    assert repr(value) in str(info.value) and "PRIMARY_STREAM_SOURCE" in str(info.value)


def test_an_arn_of_the_wrong_service_is_refused_with_its_value():
    with pytest.raises(SettingsError, match="arn:aws:sqs:us-east-1:123456789012:q"):
        KinesisLog("arn:aws:sqs:us-east-1:123456789012:q")


def test_clients_are_cached_per_service_region_and_endpoint(moto_server):
    arn = arn_for("kinesis")
    settings = settings_for(moto_server, [arn])
    one = aws.client("kinesis", arn, settings)
    assert aws.client("kinesis", arn, settings) is one
    assert one.meta.endpoint_url == moto_server and one.meta.region_name == "us-east-1"
    other_region = arn.replace("us-east-1", "eu-west-1")
    assert aws.client("kinesis", other_region, settings).meta.region_name == "eu-west-1"
    assert one.meta.config.retries["total_max_attempts"] == 1  # botocore does not retry; call() does


def test_wiring_opens_every_aws_backend(moto_server):
    expected = {
        ("STREAM", "kinesis"): KinesisLog, ("STREAM", "dynamodb_log"): DynamoDBLog,
        ("STREAM", "sns"): SnsLog, ("STREAM", "sqs"): SqsLog,
        ("CHECKPOINT", "checkpoints"): DynamoDBCheckpoints, ("RETRY", "retries"): DynamoDBRetries,
        ("RETRY", "sqs_retries"): SqsRetries, ("RETRY", "kinesis"): StreamRetries,
        ("RETRY", "sns"): StreamRetries, ("ENVIRONMENT", "environment"): DynamoDBEnvironment,
        ("DEAD_LETTER", "dead_letters"): DynamoDBDeadLetters,
    }
    for (kind, resource), cls in expected.items():
        arn = arn_for(resource)
        assert type(open_backend(kind, arn, settings_for(moto_server, [arn]))) is cls


# --- Kinesis ------------------------------------------------------------------------------------------


def test_put_records_retries_only_refused_entries_and_keeps_positions_in_order(moto_server):
    log, double = kinesis_with(moto_server, lambda real: RefusingKinesis(real, rounds=2))
    records = [OutRecord(f"cid-{i % 3}", f"record-{i}".encode()) for i in range(8)]
    positions, counted = calls_during(log.append, records)
    # 8 sent, 4 refused; 4 resent, 2 refused; 2 resent and stored
    assert [len(c["Records"]) for c in double.seen] == [8, 4, 2]
    assert counted[("kinesis", "PutRecords")] == 3
    stored = log.read(None, 100)
    assert sorted(r.data for r in stored) == sorted(r.data for r in records)  # each exactly once
    by_position = {r.position: r for r in stored}
    assert [(by_position[p].key, by_position[p].data) for p in positions] == [(r.key, r.data) for r in records]


def test_entries_refused_every_time_raise_service_unavailable(moto_server):
    log, _ = kinesis_with(moto_server, lambda real: RefusingKinesis(real, rounds=100))
    with pytest.raises(ServiceUnavailable) as info:
        log.append([OutRecord("cid", b"a"), OutRecord("cid", b"b")])
    assert log.arn in str(info.value) and "ProvisionedThroughputExceededException" in str(info.value)


def test_throttled_calls_are_retried_then_reported_with_service_operation_and_resource(moto_server):
    log, _ = kinesis_with(moto_server, lambda real: ThrottledKinesis(real, times=2))
    assert len(log.append([OutRecord("cid", b"x")])) == 1
    log, _ = kinesis_with(moto_server, lambda real: ThrottledKinesis(real, times=1000))
    with pytest.raises(ServiceUnavailable) as info:
        log.append([OutRecord("cid", b"x")])
    message = str(info.value)
    assert "kinesis" in message and "PutRecords" in message and log.arn in message


def test_more_than_500_records_go_in_chunks_of_500(moto_server):
    arn, settings = fresh(moto_server, "kinesis", shards=2)
    log = KinesisLog(arn, settings)
    records = [OutRecord(f"cid-{i % 17}", i.to_bytes(4, "big")) for i in range(1201)]
    positions, counted = calls_during(log.append, records)
    assert counted[("kinesis", "PutRecords")] == 3
    assert len(set(positions)) == 1201
    everything = []
    after = None
    while page := log.read(after, 400):
        everything.extend(page)
        after = page[-1].position
    assert sorted(r.data for r in everything) == sorted(r.data for r in records)


def test_batches_are_split_at_5_mib(moto_server):
    arn, settings = fresh(moto_server, "kinesis")
    log = KinesisLog(arn, settings)
    big = [OutRecord(f"cid-{i}", bytes([i]) * 900_000) for i in range(6)]  # 6 x 900 kB > 5 MiB
    _, counted = calls_during(log.append, big)
    assert counted[("kinesis", "PutRecords")] == 2
    assert [r.data[:1] for r in log.read(None, 10)] == [bytes([i]) for i in range(6)]


def test_a_record_over_1_mib_is_refused_before_sending(moto_server):
    arn, settings = fresh(moto_server, "kinesis")
    log = KinesisLog(arn, settings)
    with pytest.raises(RecordTooLarge) as info:
        calls_during(log.append, [OutRecord("small", b"ok"), OutRecord("cid-huge", b"x" * (1024 * 1024))])
    assert "cid-huge" in str(info.value) and str(1024 * 1024 + len("cid-huge")) in str(info.value)
    assert log.read(None, 10) == []


def test_reads_cross_shards_and_read_key_and_read_shard_agree(moto_server):
    arn, settings = fresh(moto_server, "kinesis", shards=3)
    log = KinesisLog(arn, settings)
    assert isinstance(log, ReadableLog)
    keys = [f"machine-{i}" for i in range(12)]
    records = [OutRecord(keys[i % 12], f"{i}".encode()) for i in range(60)]
    positions = log.append(records)
    shards = log.shards()
    assert len(shards) == 3 and {p.rpartition(":")[0] for p in positions} <= set(shards)
    paged, after = [], None
    while page := log.read(after, 7):
        paged.extend(page)
        after = page[-1].position
    assert sorted(r.position for r in paged) == sorted(positions)
    for key in keys:
        assert [r.data for r in log.read_key(key)] == [r.data for r in records if r.key == key]
    first_key_records = log.read_key(keys[0])
    tail = log.read_key(keys[0], after=first_key_records[1].position)
    assert tail == first_key_records[2:]
    shard, _, seq = positions[0].rpartition(":")
    assert all(r.position.startswith(shard) for r in log.read_shard(shard, seq, 100))


# --- DynamoDB log -------------------------------------------------------------------------------------


def test_dynamodb_log_batches_25_and_resends_unprocessed_items(moto_server):
    arn, settings = fresh(moto_server, "dynamodb_log")
    double = HalfUnprocessedDynamoDB(aws.client("dynamodb", arn, settings))
    log = DynamoDBLog(arn, settings, client=double)
    records = [OutRecord(f"cid-{i % 4}", f"r{i}".encode()) for i in range(60)]
    positions, counted = calls_during(log.append, records)
    # 25 (12 written, 13 unprocessed) + 13 resent + 25 + 10: four calls reach the server
    assert [len(next(iter(c["RequestItems"].values()))) for c in double.seen] == [25, 13, 25, 10]
    assert counted[("dynamodb", "BatchWriteItem")] == 4
    for key in {r.key for r in records}:
        seqs = [int(p.rpartition(":")[2]) for p, r in zip(positions, records, strict=True) if r.key == key]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        items = aws.client("dynamodb", arn, settings).query(
            TableName=log.table, KeyConditionExpression="cid = :c",
            ExpressionAttributeValues={":c": {"S": key}}, ConsistentRead=True)["Items"]
        assert [i["data"]["B"] for i in items] == [r.data for r in records if r.key == key]


# --- SNS and SQS logs ---------------------------------------------------------------------------------


def test_sns_log_delivers_base64_bodies_to_a_subscribed_queue(moto_server):
    arns = make_resources(moto_server, "sns", "sqs")
    settings = settings_for(moto_server, list(arns.values()))
    sqs = aws.client("sqs", arns["sqs"], settings)
    url = sqs.get_queue_url(QueueName=aws.parse_arn(arns["sqs"]).name)["QueueUrl"]
    aws.client("sns", arns["sns"], settings).subscribe(
        TopicArn=arns["sns"], Protocol="sqs", Endpoint=arns["sqs"], Attributes={"RawMessageDelivery": "true"})
    records = [OutRecord(f"cid-{i}", bytes([i]) * (i + 1)) for i in range(13)]
    positions, counted = calls_during(SnsLog(arns["sns"], settings).append, records)
    assert len(set(positions)) == 13 and counted[("sns", "PublishBatch")] == 2
    got = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        got += [base64.b64decode(m["Body"]) for m in messages]
    assert sorted(got) == sorted(r.data for r in records)


def test_fifo_sqs_log_groups_by_key(moto_server):
    arn, settings = fresh(moto_server, "sqs", fifo=True)
    log = SqsLog(arn, settings)
    assert log.fifo
    records = [OutRecord("cid-a", b"1"), OutRecord("cid-b", b"2"), OutRecord("cid-a", b"3")]
    assert len(log.append(records)) == 3
    sqs = aws.client("sqs", arn, settings)
    messages = sqs.receive_message(QueueUrl=log.queue.url, MaxNumberOfMessages=10,
                                   MessageSystemAttributeNames=["MessageGroupId"])["Messages"]
    assert sorted((m["Attributes"]["MessageGroupId"], base64.b64decode(m["Body"])) for m in messages) == [
        ("cid-a", b"1"), ("cid-a", b"3"), ("cid-b", b"2")]


def test_a_message_over_256_kib_is_refused_before_sending(moto_server):
    arn, settings = fresh(moto_server, "sqs")
    log = SqsLog(arn, settings)
    with pytest.raises(RecordTooLarge, match="cid-big"):
        log.append([OutRecord("cid-big", b"x" * 200_000)])  # 266,668 bytes once base64-encoded


# --- checkpoints, environment, dead letters -------------------------------------------------------------


def test_checkpoints_are_written_only_over_older_versions(moto_server):
    store = DynamoDBCheckpoints(*fresh(moto_server, "checkpoints"))
    assert store.load("cid") is None
    assert store.save("cid", 2, b"v2") is True
    assert store.save("cid", 1, b"v1") is False
    assert store.save("cid", 2, b"v2 again") is False
    assert store.load("cid") == b"v2"
    assert store.save("cid", 3, b"v3") is True
    assert store.load("cid") == b"v3"
    large = bytes(range(256)) * 3000  # 768 kB: over the item limit raw, fits compressed
    assert store.save("cid", 4, large) is True and store.load("cid") == large


def test_environment_and_dead_letters_round_trip_large_values(moto_server):
    env = DynamoDBEnvironment(*fresh(moto_server, "environment"))
    blob = b"context " * 60_000
    env.put("env-1", blob)
    assert env.get("env-1") == blob and env.get("env-2") is None
    letters = DynamoDBDeadLetters(*fresh(moto_server, "dead_letters"))
    letter_id = letters.park("unknown machine", "arn:aws:kinesis:us-east-1:1:stream/s", "shard:1", blob, 1.5)
    letter = letters.get(letter_id)
    assert (letter.reason, letter.position, letter.data, letter.time) == ("unknown machine", "shard:1", blob, 1.5)
    letters.remove(letter_id)
    assert letters.get(letter_id) is None and letters.list() == []


# --- retries ------------------------------------------------------------------------------------------


def test_sqs_retries_chain_delays_longer_than_15_minutes(moto_server):
    arn, settings = fresh(moto_server, "sqs_retries")
    t0 = 2_000_000_000.0
    clock = [t0]
    real = aws.client("sqs", arn, settings)

    # sending: the first link waits the SQS maximum and carries the due time
    waiting = SqsRetries(arn, settings, client=RecordingSqs(real), clock=lambda: clock[0])
    waiting.schedule([ScheduledRetry("cid", b"retry-1", t0 + 1800)])
    (entry,) = waiting.queue.api.client.seen[0]["Entries"]
    assert entry["DelaySeconds"] == 900
    assert float(entry["MessageAttributes"][DUE_ATTRIBUTE]["StringValue"]) == t0 + 1800

    # receiving early: re-sent with the next delay, never returned. moto hides delayed messages in real
    # time, so this store sends undelayed copies (max_delay=0) for the hops the test receives.
    queue = RecordingSqs(real)
    hop = SqsRetries(arn, settings, client=queue, clock=lambda: clock[0], max_delay=0)
    hop.schedule([ScheduledRetry("cid", b"retry-2", t0 + 1800)])
    assert hop.due(t0 + 100, 10) == []
    resent = queue.seen[-1]["Entries"][0]
    assert float(resent["MessageAttributes"][DUE_ATTRIBUTE]["StringValue"]) == t0 + 1800
    assert base64.b64decode(resent["MessageBody"]) == b"retry-2"

    # a store with the real maximum picks up the early copy and sends the next link 800 s out
    chained = RecordingSqs(real)
    SqsRetries(arn, settings, client=chained, clock=lambda: clock[0]).due(t0 + 1000, 10)
    assert chained.seen[-1]["Entries"][0]["DelaySeconds"] == 800
    attributes = real.get_queue_attributes(QueueUrl=hop.queue.url, AttributeNames=["All"])["Attributes"]
    assert int(attributes["ApproximateNumberOfMessagesDelayed"]) == 2  # the first link and the 800 s one
    assert int(attributes["ApproximateNumberOfMessages"]) == 0  # early copies were deleted, not left


def test_sqs_retries_return_a_due_message_once_and_done_deletes_it(moto_server):
    arn, settings = fresh(moto_server, "sqs_retries")
    t0 = 2_000_000_000.0
    store = SqsRetries(arn, settings, clock=lambda: t0, max_delay=0)
    store.schedule([ScheduledRetry("cid", b"due-later", t0 + 1800)])
    assert store.due(t0 + 1799, 10) == []
    (due,) = store.due(t0 + 1800, 10)
    assert due.data == b"due-later"
    store.done([due.handle, due.handle])
    attributes = aws.client("sqs", arn, settings).get_queue_attributes(
        QueueUrl=store.queue.url, AttributeNames=["All"])["Attributes"]
    assert int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"]) == 0


def test_a_fifo_queue_is_refused_as_retry_source(moto_server):
    with pytest.raises(SettingsError, match="FIFO"):
        SqsRetries(arn_for("sqs_retries", fifo=True), settings_for(moto_server))


def test_dynamodb_retry_claims_are_exclusive_between_timers(serial_moto_server):
    arn, settings = fresh(serial_moto_server, "retries")  # a server that isolates conditional writes
    now = 2_000_000_000.0
    one = DynamoDBRetries(arn, settings, claim_seconds=60)
    two = DynamoDBRetries(arn, settings, claim_seconds=60)
    payloads = {f"retry-{i}".encode() for i in range(30)}
    one.schedule([ScheduledRetry(f"cid-{i}", f"retry-{i}".encode(), now - i) for i in range(30)]
                 + [ScheduledRetry("cid-later", b"later", now + 45)])
    barrier = threading.Barrier(2)
    taken: dict[str, list] = {}

    def timer(name: str, store: DynamoDBRetries) -> None:
        barrier.wait()
        taken[name] = store.due(now, 100)

    threads = [threading.Thread(target=timer, args=(n, s)) for n, s in (("one", one), ("two", two))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handles = [d.handle for d in taken["one"] + taken["two"]]
    assert len(handles) == len(set(handles)) == 30
    assert {d.data for d in taken["one"] + taken["two"]} == payloads
    assert one.due(now + 30, 100) == [] and two.due(now + 30, 100) == []  # claimed, and "later" not due
    reoffered = two.due(now + 61, 100)  # the claims ran out: offered again, with the one now due
    assert {d.data for d in reoffered} == payloads | {b"later"}
    two.done([d.handle for d in reoffered])
    assert one.due(now + 1000, 100) == []


def test_scheduling_the_same_retry_twice_stores_it_once(moto_server):
    store = DynamoDBRetries(*fresh(moto_server, "retries"))
    retry = ScheduledRetry("cid", b"same", 1.0)
    store.schedule([retry, retry])
    store.schedule([retry])
    assert [d.data for d in store.due(2.0, 10)] == [b"same"]


def test_stream_retries_append_at_once_and_have_nothing_due(moto_server):
    arn, settings = fresh(moto_server, "kinesis")
    store = StreamRetries.from_target(arn, settings)
    store.schedule([ScheduledRetry("cid", b"now", 9_999_999_999.0)])
    assert store.due(0.0, 10) == []
    assert [r.data for r in KinesisLog(arn, settings).read_key("cid")] == [b"now"]
    with pytest.raises(SettingsError):
        StreamRetries.from_target(arn_for("sqs"), settings)


# --- missing resources ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, use", [
    ("kinesis", lambda arn, s: KinesisLog(arn, s).append([OutRecord("cid", b"x")])),
    ("kinesis", lambda arn, s: KinesisLog(arn, s).read(None, 10)),
    ("dynamodb_log", lambda arn, s: DynamoDBLog(arn, s).append([OutRecord("cid", b"x")])),
    ("checkpoints", lambda arn, s: DynamoDBCheckpoints(arn, s).load("cid")),
    ("retries", lambda arn, s: DynamoDBRetries(arn, s).due(1.0, 10)),
    ("sqs_retries", lambda arn, s: SqsRetries(arn, s).schedule([ScheduledRetry("cid", b"x", 1.0)])),
    ("sqs", lambda arn, s: SqsLog(arn, s).append([OutRecord("cid", b"x")])),
    ("sns", lambda arn, s: SnsLog(arn, s).append([OutRecord("cid", b"x")])),
    ("environment", lambda arn, s: DynamoDBEnvironment(arn, s).get("id")),
    ("dead_letters", lambda arn, s: DynamoDBDeadLetters(arn, s).list()),
])
def test_a_missing_resource_is_named_with_the_fix(moto_server, kind, use):
    arn = arn_for(kind, f"missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(BackendError) as info:
        use(arn, settings_for(moto_server, [arn]))
    assert not isinstance(info.value, ServiceUnavailable)
    assert arn in str(info.value) and "fsmlog resources create" in str(info.value)
