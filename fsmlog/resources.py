"""Create and delete every AWS resource the settings name (``fsmlog resources create|delete``).

Idempotent both ways: a resource that already exists (or is already gone) is
reported, not an error, so the commands can run on every deploy. Settings
that name no AWS resource fsmlog can create are skipped: ``sqlite:`` files
(created on first use), ``emf:``, CloudWatch (metrics need no resource) and
Elasticache / ``redis://`` / ``memcached://`` (clusters are provisioned with
their network, outside fsmlog).

Table layouts come from the backend classes when they declare them (``KEYS`` as
``(name, "HASH"|"RANGE", "S"|"N"|"B")`` tuples, ``INDEXES``, ``TTL_ATTRIBUTE``),
else from :data:`TABLES`, the agreed defaults.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventlog.errors import BackendError, SettingsError
from eventlog.settings import SOURCES, Settings

Key = tuple[str, str, str]


@dataclass(frozen=True)
class TableSpec:
    """What one DynamoDB table needs for the kind of source it serves."""

    keys: tuple[Key, ...]
    indexes: tuple[tuple[str, tuple[Key, ...]], ...] = ()
    ttl_attribute: str | None = None
    stream: bool = False  # a DynamoDB stream (NEW_IMAGE) that triggers the workers
    kinds: tuple[str, ...] = field(default=(), compare=False)


# The agreed layouts, used when a backend class does not declare its own.
TABLES: dict[str, TableSpec] = {
    "STREAM": TableSpec((("cid", "HASH", "S"), ("seq", "RANGE", "N")), stream=True),
    "CHECKPOINT": TableSpec((("cid", "HASH", "S"),)),
    "RETRY": TableSpec((("id", "HASH", "S"),), indexes=(("due-index", (("shard", "HASH", "N"), ("due", "RANGE", "N"))),)),
    "CACHE": TableSpec((("key", "HASH", "S"),), ttl_attribute="ttl"),
    "ENVIRONMENT": TableSpec((("id", "HASH", "S"),)),
    "DEAD_LETTER": TableSpec((("id", "HASH", "S"),)),
}

# services that name a stream / queue / topic, per kind (a Kinesis or SNS retry source is a stream too)
CREATABLE = {"kinesis", "dynamodb", "sqs", "sns"}


def _backend_class(kind: str, service: str) -> Any:
    from handlers.wiring import BACKENDS

    path = BACKENDS.get((kind, service))
    if path is None:
        return None
    module, _, cls = path.partition(":")
    try:
        return getattr(importlib.import_module(module), cls, None)
    except ImportError:
        return None


def table_spec(kind: str) -> TableSpec:
    """The table a DynamoDB source of ``kind`` needs: the backend's own declaration wins."""
    default = TABLES[kind]
    cls = _backend_class(kind, "dynamodb")
    if cls is None:
        return default
    keys = tuple(tuple(k) for k in getattr(cls, "KEYS", default.keys))
    indexes = tuple((name, tuple(tuple(k) for k in ks)) for name, ks in getattr(cls, "INDEXES", default.indexes))
    ttl = getattr(cls, "TTL_ATTRIBUTE", default.ttl_attribute)
    return TableSpec(keys, indexes, ttl, default.stream)


@dataclass(frozen=True)
class Resource:
    service: str  # kinesis, dynamodb, sqs, sns
    arn: str
    settings: tuple[str, ...]  # the settings naming it, for messages
    table: TableSpec | None = None


def named_resources(settings: Settings) -> list[Resource]:
    """Every creatable AWS resource the settings name, each once, in setting order.

    The same ARN under several settings is one resource; a table named for two
    kinds that need different layouts is refused, naming both settings.
    """
    from eventlog.aws import parse_arn

    found: dict[str, Resource] = {}
    for kind in SOURCES:
        for side in ("PRIMARY", "SECONDARY"):
            setting = f"{side}_{kind}_SOURCE"
            target = settings.get(setting)
            if not target or not str(target).startswith("arn:"):
                continue
            arn = parse_arn(str(target), setting)
            if arn.service not in CREATABLE:
                continue
            spec = None
            if arn.service == "dynamodb":
                if kind not in TABLES:
                    raise SettingsError(f"setting {setting} names a DynamoDB table, which cannot serve as {kind.lower()} source")
                spec = table_spec(kind)
            previous = found.get(str(target))
            if previous is not None:
                if previous.table != spec:
                    raise SettingsError(
                        f"settings {previous.settings[0]} and {setting} name the same table {target!r} but need "
                        f"different key layouts; give each its own table"
                    )
                found[str(target)] = Resource(previous.service, previous.arn, (*previous.settings, setting), spec)
            else:
                found[str(target)] = Resource(arn.service, str(target), (setting,), spec)
    return list(found.values())


# --- per service ---------------------------------------------------------------------------------------


def _gone(exc: BackendError) -> bool:
    from eventlog.aws import MISSING_CODES

    return exc.code in MISSING_CODES


class _Provisioner:
    """Creates and deletes one resource at a time; waits on boto3's waiters (``eventlog.aws.wait``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def api(self, service: str, arn: str) -> Any:
        from eventlog.aws import api

        return api(service, arn, self.settings)

    # Kinesis ----------------------------------------------------------------------------------------

    def _stream_status(self, kinesis: Any, name: str) -> str | None:
        try:
            return kinesis("describe_stream_summary", StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
        except BackendError as exc:
            if _gone(exc):
                return None
            raise

    def create_kinesis(self, res: Resource, shards: int) -> str:
        from eventlog.aws import parse_arn

        name = parse_arn(res.arn).name
        kinesis = self.api("kinesis", res.arn)
        existed = self._stream_status(kinesis, name) is not None
        if not existed:
            try:
                kinesis("create_stream", StreamName=name, ShardCount=shards)
            except BackendError as exc:
                if exc.code != "ResourceInUseException":
                    raise
        kinesis.wait("stream_exists", StreamName=name)
        return "exists" if existed else "created"

    def delete_kinesis(self, res: Resource) -> str:
        from eventlog.aws import parse_arn

        name = parse_arn(res.arn).name
        kinesis = self.api("kinesis", res.arn)
        status = self._stream_status(kinesis, name)
        if status is None:
            return "missing"
        if status != "DELETING":
            try:
                kinesis("delete_stream", StreamName=name, EnforceConsumerDeletion=True)
            except BackendError as exc:
                if not _gone(exc):
                    raise
        kinesis.wait("stream_not_exists", StreamName=name)
        return "deleted"

    # DynamoDB ---------------------------------------------------------------------------------------

    def _table(self, ddb: Any, name: str) -> dict[str, Any] | None:
        try:
            return ddb("describe_table", TableName=name)["Table"]
        except BackendError as exc:
            if _gone(exc):
                return None
            raise

    def create_dynamodb(self, res: Resource) -> str:
        from eventlog.aws import parse_arn

        spec = res.table
        assert spec is not None
        name = parse_arn(res.arn).name
        ddb = self.api("dynamodb", res.arn)
        existed = self._table(ddb, name) is not None
        if not existed:
            try:
                ddb("create_table", **create_table_params(name, spec))
            except BackendError as exc:
                if exc.code != "ResourceInUseException":
                    raise
        ddb.wait("table_exists", TableName=name)
        if spec.ttl_attribute:
            ttl = ddb("describe_time_to_live", TableName=name).get("TimeToLiveDescription", {})
            if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
                ddb("update_time_to_live", TableName=name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute})
        return "exists" if existed else "created"

    def delete_dynamodb(self, res: Resource) -> str:
        from eventlog.aws import parse_arn

        name = parse_arn(res.arn).name
        ddb = self.api("dynamodb", res.arn)
        table = self._table(ddb, name)
        if table is None:
            return "missing"
        if table.get("TableStatus") != "DELETING":
            try:
                ddb("delete_table", TableName=name)
            except BackendError as exc:
                if not _gone(exc):
                    raise
        ddb.wait("table_not_exists", TableName=name)
        return "deleted"

    # SQS --------------------------------------------------------------------------------------------

    def _queue_url(self, sqs: Any, name: str, account: str) -> str | None:
        try:
            return sqs("get_queue_url", QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        except BackendError as exc:
            if _gone(exc):
                return None
            raise

    def create_sqs(self, res: Resource) -> str:
        from eventlog.aws import parse_arn

        arn = parse_arn(res.arn)
        sqs = self.api("sqs", res.arn)
        if self._queue_url(sqs, arn.name, arn.account):
            return "exists"
        attributes = {"VisibilityTimeout": "900"}  # at least the function's timeout, as Lambda requires
        if arn.name.endswith(".fifo"):
            attributes["FifoQueue"] = "true"
        sqs("create_queue", QueueName=arn.name, Attributes=attributes)
        return "created"

    def delete_sqs(self, res: Resource) -> str:
        from eventlog.aws import parse_arn

        arn = parse_arn(res.arn)
        sqs = self.api("sqs", res.arn)
        url = self._queue_url(sqs, arn.name, arn.account)
        if url is None:
            return "missing"
        sqs("delete_queue", QueueUrl=url)
        return "deleted"

    # SNS --------------------------------------------------------------------------------------------

    def _topic_exists(self, sns: Any, arn: str) -> bool:
        try:
            sns("get_topic_attributes", TopicArn=arn)
            return True
        except BackendError as exc:
            if _gone(exc):
                return False
            raise

    def create_sns(self, res: Resource) -> str:
        from eventlog.aws import parse_arn

        sns = self.api("sns", res.arn)
        if self._topic_exists(sns, res.arn):
            return "exists"
        name = parse_arn(res.arn).name
        attributes = {"FifoTopic": "true"} if name.endswith(".fifo") else {}
        sns("create_topic", Name=name, Attributes=attributes)
        return "created"

    def delete_sns(self, res: Resource) -> str:
        sns = self.api("sns", res.arn)
        if not self._topic_exists(sns, res.arn):
            return "missing"
        sns("delete_topic", TopicArn=res.arn)
        return "deleted"


def create_table_params(name: str, spec: TableSpec) -> dict[str, Any]:
    """CreateTable parameters (on-demand billing) for one table layout."""
    attrs: dict[str, str] = {}
    for key_name, _, kind in [*spec.keys, *(k for _, ks in spec.indexes for k in ks)]:
        attrs[key_name] = kind
    params: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [{"AttributeName": n, "KeyType": t} for n, t, _ in spec.keys],
        "AttributeDefinitions": [{"AttributeName": n, "AttributeType": k} for n, k in attrs.items()],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if spec.indexes:
        params["GlobalSecondaryIndexes"] = [
            {"IndexName": index, "KeySchema": [{"AttributeName": n, "KeyType": t} for n, t, _ in ks],
             "Projection": {"ProjectionType": "ALL"}}
            for index, ks in spec.indexes
        ]
    if spec.stream:
        params["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    return params


def create_resources(settings: Settings, *, shards: int = 1, sleep: Callable[[float], None] | None = None) -> list[str]:
    """Create what the settings name; one line per resource: ``created <arn>`` or ``exists <arn>``.

    ``sleep`` is accepted for older callers and unused: waits are boto3 waiters paced by
    ``eventlog.aws.WAITER_DELAY`` (moto settles at once, so they never pause there).
    """
    p = _Provisioner(settings)
    out = []
    for res in named_resources(settings):
        if res.service == "kinesis":
            status = p.create_kinesis(res, shards)
        else:
            status = getattr(p, f"create_{res.service}")(res)
        out.append(f"{status} {res.arn}")
    return out


def delete_resources(settings: Settings, *, sleep: Callable[[float], None] | None = None) -> list[str]:
    """Delete what the settings name; one line per resource: ``deleted <arn>`` or ``missing <arn>``
    (``sleep``: as for :func:`create_resources`)."""
    p = _Provisioner(settings)
    return [f"{getattr(p, f'delete_{res.service}')(res)} {res.arn}" for res in named_resources(settings)]
