"""``fsmlog dev``: a local stand-in for Lambda and its event source mappings.

It polls the configured sources the way Lambda's pollers do and calls
``handlers.lambda_handler`` with exactly the event Lambda would build:

- a Kinesis stream: every shard with GetRecords (from TRIM_HORIZON), one
  ``aws:kinesis`` event per page; on ``batchItemFailures`` the shard's iterator
  restarts AT the failed sequence number (after a short backoff), as Lambda
  does with ReportBatchItemFailures;
- a DynamoDB table as the log: its stream (DynamoDB Streams GetRecords), one
  ``aws:dynamodb`` event per page, failures handled like Kinesis;
- an SQS retry queue (and an SQS queue as the log): ReceiveMessage, one
  ``aws:sqs`` event per receive; the messages not in ``batchItemFailures`` are
  deleted, the others come back after the queue's visibility timeout;
- the embedded log: read after the loop's committed offset, delivered as a
  Kinesis event (like ``fsmlog worker``); a secondary embedded log is polled
  too, with its own offset and its own name as the event source;
- every ``timer_every_s`` the EventBridge "Scheduled Event" (unless the retry
  source is an SQS queue, whose messages arrive through the SQS poller).

``local_endpoints`` starts moto's server in this process when the settings name
AWS resources but no endpoint for them, and points ``ENDPOINTS`` at it (the CLI
then creates the resources).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eventlog.errors import FsmlogError, SettingsError
from eventlog.settings import SOURCE_SETTINGS, Settings

from .errors import HandlerError

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("fsmlog.dev")

ROLE_ARN = "arn:aws:iam::123456789012:role/fsmlog-dev"
NO_EMULATOR = ("elasticache",)  # moto serves these ARNs' data planes poorly or not at all
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
FAILURE_BACKOFF_S = (0.2, 2.0)  # first and largest pause before a failed batch is delivered again


@dataclass
class DevStats:
    invocations: int = 0
    records: int = 0
    failed_items: int = 0  # itemIdentifiers returned in batchItemFailures
    errors: int = 0  # invocations that raised
    retry_messages: int = 0  # messages delivered from the SQS retry queue
    timer_runs: int = 0
    requeued: int = 0  # retries the timer moved into the log


class LambdaContext:
    """The parts of Lambda's context object handlers read."""

    def __init__(self, function_name: str = "fsmlog-dev", timeout_s: float = 900.0, region: str = "us-east-1"):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:123456789012:function:{function_name}"
        self.memory_limit_in_mb = 1024
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _arn_region(arn: str) -> str:
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 and parts[3] else "us-east-1"


def _service(arn: str) -> str:
    parts = arn.split(":")
    return parts[2] if len(parts) > 2 else ""


# ---------------------------------------------------------------- local AWS


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def aws_targets(settings: Settings) -> list[str]:
    """Every ARN the source settings name, once, in setting order."""
    seen: dict[str, None] = {}
    for name in SOURCE_SETTINGS:
        value = settings.get(name)
        if isinstance(value, str) and value.startswith("arn:"):
            seen.setdefault(value)
    return list(seen)


def local_endpoints(settings: Settings, environ: dict[str, str] | None = None) -> tuple[Settings, Any]:
    """Settings whose AWS resources all have an endpoint: when some have none (and ``AWS_ENDPOINT_URL``
    is unset), moto's server is started on 127.0.0.1 and ``ENDPOINTS`` maps them to it.

    Returns ``(settings, server)``; ``server`` is None when nothing was started (stop it when done).
    """
    env = os.environ if environ is None else environ
    endpoints = dict(settings.ENDPOINTS or {})
    missing = [a for a in aws_targets(settings) if a not in endpoints and _service(a) not in NO_EMULATOR]
    if not missing or env.get("AWS_ENDPOINT_URL"):
        return settings, None
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise HandlerError(
            f"{len(missing)} AWS resource(s) have no endpoint and moto, the local emulator, is not installed: "
            "pip install 'fsmlog[dev]' (or map them in ENDPOINTS, or set AWS_ENDPOINT_URL)"
        ) from None

    port = _free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per emulated API call otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)  # moto accepts any; boto3 refuses to sign without
    log.info("started a local AWS emulator (moto) at %s for %d resource(s)", url, len(missing))
    return settings.replace(ENDPOINTS={**endpoints, **{a: url for a in missing}}), server


# ---------------------------------------------------------------- pollers


class _Backoff:
    def __init__(self) -> None:
        self.pause = 0.0
        self.until = 0.0

    def failed(self, now: float) -> None:
        self.pause = min(FAILURE_BACKOFF_S[1], max(FAILURE_BACKOFF_S[0], self.pause * 2))
        self.until = now + self.pause

    def ok(self) -> None:
        self.pause = 0.0

    def waiting(self, now: float) -> bool:
        return now < self.until


class KinesisPoller:
    """Lambda's Kinesis event source mapping for one stream (every shard, TRIM_HORIZON)."""

    kind = "kinesis"

    def __init__(self, loop: DevLoop, arn: str) -> None:
        from eventlog import aws

        self.loop = loop
        self.arn = arn
        self.stream = aws.parse_arn(arn).name
        self.region = _arn_region(arn)
        self.api = aws.api("kinesis", arn, loop.settings)
        self.iterators: dict[str, str | None] = {}
        self.backoff: dict[str, _Backoff] = {}
        self.listed = -1e9

    def _list_shards(self) -> None:
        for page in self.api.pages("list_shards", StreamName=self.stream):
            for shard in page.get("Shards", []):
                sid = shard["ShardId"]
                if sid not in self.iterators:
                    self.iterators[sid] = self.api("get_shard_iterator", StreamName=self.stream, ShardId=sid,
                                                   ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
                    self.backoff[sid] = _Backoff()
        self.listed = self.loop.monotonic()

    def event(self, shard_id: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        out = []
        for r in records:
            arrival = r.get("ApproximateArrivalTimestamp")
            stamp = arrival.timestamp() if isinstance(arrival, dt.datetime) else float(arrival or time.time())
            out.append({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r["PartitionKey"],
                    "sequenceNumber": r["SequenceNumber"],
                    "data": base64.b64encode(r["Data"]).decode("ascii"),
                    "approximateArrivalTimestamp": round(stamp, 3),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard_id}:{r['SequenceNumber']}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": ROLE_ARN,
                "awsRegion": self.region,
                "eventSourceARN": self.arn,
            })
        return {"Records": out}

    def poll(self) -> int:
        now = self.loop.monotonic()
        if now - self.listed >= self.loop.shard_refresh_s:
            self._list_shards()
        delivered = 0
        for shard_id, iterator in list(self.iterators.items()):
            if iterator is None or self.backoff[shard_id].waiting(now):
                continue
            page = self.api("get_records", ShardIterator=iterator, Limit=self.loop.batch_size)
            records = page.get("Records", [])
            if not records:
                self.iterators[shard_id] = page.get("NextShardIterator")  # None once a closed shard is read
                continue
            failed = self.loop.invoke(self.event(shard_id, records), len(records))
            delivered += len(records)
            if failed is None:
                self.iterators[shard_id] = page.get("NextShardIterator")
                self.backoff[shard_id].ok()
                continue
            seq = failed or records[0]["SequenceNumber"]  # "" = the whole batch failed
            self.iterators[shard_id] = self.api("get_shard_iterator", StreamName=self.stream, ShardId=shard_id,
                                                ShardIteratorType="AT_SEQUENCE_NUMBER",
                                                StartingSequenceNumber=seq)["ShardIterator"]
            self.backoff[shard_id].failed(now)
        return delivered


class DynamoDBStreamPoller:
    """Lambda's DynamoDB Streams event source mapping for the log table's stream."""

    kind = "dynamodb"

    def __init__(self, loop: DevLoop, table_arn: str) -> None:
        from eventlog import aws

        self.loop = loop
        self.table_arn = table_arn
        self.table = aws.parse_arn(table_arn).name
        self.region = _arn_region(table_arn)
        self.ddb = aws.api("dynamodb", table_arn, loop.settings)
        self.streams = aws.api("dynamodbstreams", table_arn, loop.settings)
        self.stream_arn: str | None = None
        self.iterators: dict[str, str | None] = {}
        self.backoff: dict[str, _Backoff] = {}
        self.listed = -1e9

    def _list_shards(self) -> None:
        if self.stream_arn is None:
            table = self.ddb("describe_table", TableName=self.table)["Table"]
            self.stream_arn = table.get("LatestStreamArn")
            if not self.stream_arn:
                raise SettingsError(
                    f"table {self.table_arn} has no stream; the log table needs a NEW_IMAGE stream "
                    "(`fsmlog resources create` makes one)"
                )
        desc = self.streams("describe_stream", StreamArn=self.stream_arn)["StreamDescription"]
        for shard in desc.get("Shards", []):
            sid = shard["ShardId"]
            if sid not in self.iterators:
                self.iterators[sid] = self.streams("get_shard_iterator", StreamArn=self.stream_arn, ShardId=sid,
                                                   ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
                self.backoff[sid] = _Backoff()
        self.listed = self.loop.monotonic()

    @staticmethod
    def _wire(value: Any) -> Any:
        """An attribute value as Lambda's JSON carries it (binary as base64)."""
        if isinstance(value, dict):
            return {k: (base64.b64encode(v).decode("ascii") if k == "B" and isinstance(v, bytes | bytearray)
                        else DynamoDBStreamPoller._wire(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [DynamoDBStreamPoller._wire(v) for v in value]
        return value

    def event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        out = []
        for r in records:
            body = dict(r.get("dynamodb") or {})
            created = body.get("ApproximateCreationDateTime")
            if isinstance(created, dt.datetime):
                body["ApproximateCreationDateTime"] = int(created.timestamp())
            out.append({
                "eventID": r.get("eventID") or uuid.uuid4().hex,
                "eventName": r.get("eventName"),
                "eventVersion": r.get("eventVersion", "1.1"),
                "eventSource": "aws:dynamodb",
                "awsRegion": r.get("awsRegion") or self.region,
                "dynamodb": self._wire(body),
                "eventSourceARN": self.stream_arn,
            })
        return {"Records": out}

    def poll(self) -> int:
        now = self.loop.monotonic()
        if now - self.listed >= self.loop.shard_refresh_s:
            self._list_shards()
        delivered = 0
        for shard_id, iterator in list(self.iterators.items()):
            if iterator is None or self.backoff[shard_id].waiting(now):
                continue
            page = self.streams("get_records", ShardIterator=iterator, Limit=min(self.loop.batch_size, 1000))
            records = page.get("Records", [])
            if not records:
                self.iterators[shard_id] = page.get("NextShardIterator")
                continue
            failed = self.loop.invoke(self.event(records), len(records))
            delivered += len(records)
            if failed is None:
                self.iterators[shard_id] = page.get("NextShardIterator")
                self.backoff[shard_id].ok()
                continue
            seq = failed or records[0]["dynamodb"]["SequenceNumber"]
            self.iterators[shard_id] = self.streams("get_shard_iterator", StreamArn=self.stream_arn,
                                                    ShardId=shard_id, ShardIteratorType="AT_SEQUENCE_NUMBER",
                                                    SequenceNumber=seq)["ShardIterator"]
            self.backoff[shard_id].failed(now)
        return delivered


class SqsPoller:
    """Lambda's SQS event source mapping for one queue (ReportBatchItemFailures on)."""

    kind = "sqs"

    def __init__(self, loop: DevLoop, arn: str, retry: bool) -> None:
        from eventlog.backends.sqs import Queue

        self.loop = loop
        self.arn = arn
        self.retry = retry
        self.region = _arn_region(arn)
        self.queue = Queue(arn, loop.settings)

    def event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        out = []
        for m in messages:
            attrs = {}
            for name, a in (m.get("MessageAttributes") or {}).items():
                attrs[name] = {
                    "stringValue": a.get("StringValue"),
                    "binaryValue": base64.b64encode(a["BinaryValue"]).decode("ascii") if a.get("BinaryValue") else None,
                    "stringListValues": a.get("StringListValues", []),
                    "binaryListValues": [base64.b64encode(b).decode("ascii") for b in a.get("BinaryListValues", [])],
                    "dataType": a.get("DataType", "String"),
                }
                attrs[name] = {k: v for k, v in attrs[name].items() if v is not None}
            out.append({
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": dict(m.get("Attributes") or {}),
                "messageAttributes": attrs,
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": self.arn,
                "awsRegion": self.region,
            })
        return {"Records": out}

    def poll(self) -> int:
        page = self.queue.api("receive_message", QueueUrl=self.queue.url, MaxNumberOfMessages=10,
                              WaitTimeSeconds=0, AttributeNames=["All"], MessageAttributeNames=["All"])
        messages = page.get("Messages", [])
        if not messages:
            return 0
        if self.retry:
            self.loop.stats.retry_messages += len(messages)
        failed = self.loop.invoke(self.event(messages), len(messages), every_failure=True)
        if failed == "":  # the invocation raised: every message comes back after its visibility timeout
            return len(messages)
        keep = set(failed or ())
        done = [m["ReceiptHandle"] for m in messages if m["MessageId"] not in keep]
        for start in range(0, len(done), 10):
            self.queue.api("delete_message_batch", QueueUrl=self.queue.url,
                           Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(done[start:start + 10])])
        return len(messages)


class EmbeddedPoller:
    """The embedded log, delivered as Kinesis events after the loop's committed offset."""

    kind = "embedded"
    consumer = "fsmlog-dev"

    def __init__(self, loop: DevLoop, log_: Any) -> None:
        self.loop = loop
        self.log = log_
        self.backoff = _Backoff()

    def poll(self) -> int:
        from .worker import kinesis_record

        now = self.loop.monotonic()
        if self.backoff.waiting(now):
            return 0
        after = self.log.committed(self.consumer)
        records = self.log.read(None if after is None else str(after), self.loop.batch_size)
        if not records:
            return 0
        region = self.loop.settings.AWS_REGION or "local"
        event = {"Records": [kinesis_record(r, self.log.name, time.time(), region) for r in records]}
        failed = self.loop.invoke(event, len(records))
        if failed is None:
            self.log.commit(self.consumer, records[-1].position)
            self.backoff.ok()
        else:
            index = next((i for i, r in enumerate(records) if r.position == failed), 0)
            if index:
                self.log.commit(self.consumer, records[index - 1].position)
            self.backoff.failed(now)
        return len(records)


# ---------------------------------------------------------------- the loop


class DevLoop:
    """Polls every configured source and the timer, calling ``handlers.lambda_handler``."""

    def __init__(self, engine: Engine, *, batch_size: int = 100, poll_s: float = 0.2, timer_every_s: float = 2.0,
                 shard_refresh_s: float = 10.0, handler: Callable[[Any, Any], Any] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        from . import lambda_handler
        from .triggers import runtime

        self.engine = engine
        self.settings: Settings = engine.settings
        self.batch_size = max(1, min(10_000, batch_size))
        self.poll_s = poll_s
        self.timer_every_s = timer_every_s
        self.shard_refresh_s = shard_refresh_s
        self.handler = handler or lambda_handler
        self.monotonic = monotonic
        self.stats = DevStats()
        self._stop = threading.Event()
        self._last_timer = -1e9
        runtime.set_engine(engine)
        self.pollers = self._pollers()
        retry = self.settings.source("RETRY", "PRIMARY") or ""
        self.timer = not (retry.startswith("arn:") and _service(retry) == "sqs")

    def _pollers(self) -> list[Any]:
        pollers: list[Any] = []
        stream = self.settings.source("STREAM", "PRIMARY") or ""
        streams = [stream] + [s for s in [self.settings.source("STREAM", "SECONDARY")] if s and s != stream]
        for target in streams:
            service = _service(target) if target.startswith("arn:") else "sqlite"
            if service == "kinesis":
                pollers.append(KinesisPoller(self, target))
            elif service == "dynamodb":
                pollers.append(DynamoDBStreamPoller(self, target))
            elif service == "sqs":
                pollers.append(SqsPoller(self, target, retry=False))
            elif service == "sqlite":
                pollers.append(EmbeddedPoller(self, self._embedded_side(target)))
            else:
                raise SettingsError(
                    f"fsmlog dev cannot poll stream source {target!r} ({service}); it polls Kinesis, DynamoDB "
                    "(its stream), SQS and the embedded log. For SNS, subscribe an SQS queue and use that."
                )
        for side in ("PRIMARY", "SECONDARY"):
            target = self.settings.source("RETRY", side) or ""
            if target.startswith("arn:") and _service(target) == "sqs" and target not in {p.arn for p in pollers
                                                                                            if p.kind == "sqs"}:
                pollers.append(SqsPoller(self, target, retry=True))
        return pollers

    def _embedded_side(self, target: str) -> Any:
        """The embedded log serving ``target``: the primary or the secondary side of the stream source
        (each side is polled on its own, with its own committed offset, as each has its own trigger)."""
        from eventlog.sides import sides

        log_ = self.engine.services.log
        for _side, backend in sides(log_):
            if getattr(backend, "name", None) == target and hasattr(backend, "committed"):
                return backend
        raise SettingsError(f"fsmlog dev cannot read the embedded log {target!r} through {log_!r}")

    def invoke(self, event: dict[str, Any], count: int, every_failure: bool = False) -> Any:
        """Call the handler like Lambda. Returns None on success, the first failed item id (a list of
        every one when ``every_failure``), or "" when the invocation raised."""
        self.stats.invocations += 1
        self.stats.records += count
        region = _arn_region(event["Records"][0].get("eventSourceARN") or "") if event.get("Records") else "us-east-1"
        try:
            response = self.handler(event, LambdaContext(region=region))
        except Exception as exc:  # Lambda would count an error and deliver the batch again
            self.stats.errors += 1
            log.error("invocation failed (%s); the batch will be delivered again: %s", type(exc).__name__, exc,
                      exc_info=self.settings.DEBUG)
            return ""
        items = [f.get("itemIdentifier") for f in (response or {}).get("batchItemFailures") or []]
        if not items:
            return None
        self.stats.failed_items += len(items)
        return items if every_failure else items[0]

    def run_timer(self, force: bool = False) -> int:
        now = self.monotonic()
        if not self.timer or (not force and now - self._last_timer < self.timer_every_s):
            return 0
        self._last_timer = now
        region = self.settings.AWS_REGION or "us-east-1"
        event: dict[str, Any] = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": region,
            "resources": [f"arn:aws:events:{region}:123456789012:rule/fsmlog-dev-timer"],
            "detail": {},
        }
        self.stats.timer_runs += 1
        try:
            result = self.handler(event, LambdaContext(region=region)) or {}
        except FsmlogError as exc:
            log.error("timer failed: %s", exc)
            return 0
        moved = int(result.get("requeued", 0))
        self.stats.requeued += moved
        return moved

    def run_once(self) -> int:
        """One round over every source (and the timer when due); how many records were delivered."""
        delivered = 0
        for poller in self.pollers:
            try:
                delivered += poller.poll()
            except FsmlogError as exc:
                log.error("polling %s failed: %s", getattr(poller, "arn", poller.kind), exc)
        delivered += self.run_timer()
        return delivered

    def stop(self) -> None:
        self._stop.set()

    def run(self, until: Callable[[], bool] | None = None, timeout_s: float | None = None) -> bool:
        """Poll until ``until()`` is true (True), ``timeout_s`` passes or ``stop()`` is called (False)."""
        deadline = None if timeout_s is None else self.monotonic() + timeout_s
        while not self._stop.is_set():
            if until is not None and until():
                return True
            delivered = self.run_once()
            if deadline is not None and self.monotonic() >= deadline:
                return bool(until is not None and until())
            if not delivered:
                self._stop.wait(self.poll_s)
        return bool(until is not None and until())
