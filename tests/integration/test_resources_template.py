"""``fsmlog resources create|delete`` against moto over HTTP, and the SAM template through cfn-lint."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventlog.errors import SettingsError
from tests.fixtures.servers import ACCOUNT, REGION, settings_for

pytestmark = pytest.mark.integration


def arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


def every_kind(suffix: str) -> dict[str, str]:
    """One source of every AWS kind fsmlog creates (plus ones it must skip)."""
    return {
        "PRIMARY_STREAM_SOURCE": arn("kinesis", f"stream/log-{suffix}"),
        "SECONDARY_STREAM_SOURCE": arn("dynamodb", f"table/log-{suffix}"),
        "PRIMARY_CHECKPOINT_SOURCE": arn("dynamodb", f"table/ckpt-{suffix}"),
        "SECONDARY_CHECKPOINT_SOURCE": arn("dynamodb", f"table/ckpt-{suffix}"),  # same as primary: one table
        "PRIMARY_RETRY_SOURCE": arn("dynamodb", f"table/retries-{suffix}"),
        "SECONDARY_RETRY_SOURCE": arn("sqs", f"retries-{suffix}"),
        "PRIMARY_ENVIRONMENT_SOURCE": arn("dynamodb", f"table/env-{suffix}"),
        "PRIMARY_CACHE_SOURCE": arn("elasticache", f"replicationgroup:cache-{suffix}"),
        "SECONDARY_CACHE_SOURCE": arn("dynamodb", f"table/cache-{suffix}"),
        "PRIMARY_METRICS_SOURCE": arn("cloudwatch", f"namespace/m-{suffix}"),
        "PRIMARY_DEAD_LETTER_SOURCE": arn("dynamodb", f"table/dlq-{suffix}"),
        "SECONDARY_DEAD_LETTER_SOURCE": "sqlite:///.fsmlog/local.db",
    }


@pytest.fixture
def sources() -> dict[str, str]:
    return every_kind(uuid.uuid4().hex[:8])


def test_create_twice_then_delete_twice(moto_server: str, sources: dict[str, str]) -> None:
    import boto3

    from fsmlog.resources import create_resources, delete_resources

    sns_topic = arn("sns", f"topic-{uuid.uuid4().hex[:8]}")
    sources = {**sources, "SECONDARY_STREAM_SOURCE": sns_topic}  # the DynamoDB log has its own test
    settings = settings_for(moto_server, **sources)
    expected = [
        sources["PRIMARY_STREAM_SOURCE"], sns_topic, sources["PRIMARY_CHECKPOINT_SOURCE"],
        sources["PRIMARY_RETRY_SOURCE"], sources["SECONDARY_RETRY_SOURCE"], sources["PRIMARY_ENVIRONMENT_SOURCE"],
        sources["SECONDARY_CACHE_SOURCE"], sources["PRIMARY_DEAD_LETTER_SOURCE"],
    ]
    no_wait = lambda s: None  # noqa: E731 - moto settles at once; never sleep in tests

    assert create_resources(settings, shards=2, sleep=no_wait) == [f"created {a}" for a in expected]
    assert create_resources(settings, shards=2, sleep=no_wait) == [f"exists {a}" for a in expected]

    kinesis = boto3.client("kinesis", region_name=REGION, endpoint_url=moto_server)
    summary = kinesis.describe_stream_summary(StreamName=expected[0].rsplit("/", 1)[1])["StreamDescriptionSummary"]
    assert summary["StreamStatus"] == "ACTIVE" and summary["OpenShardCount"] == 2

    ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_server)

    def table(a: str) -> dict[str, Any]:
        return ddb.describe_table(TableName=a.rsplit("/", 1)[1])["Table"]

    def keys(t: dict[str, Any]) -> list[tuple[str, str]]:
        return [(k["AttributeName"], k["KeyType"]) for k in t["KeySchema"]]

    assert keys(table(sources["PRIMARY_CHECKPOINT_SOURCE"])) == [("cid", "HASH")]
    retries = table(sources["PRIMARY_RETRY_SOURCE"])
    assert keys(retries) == [("id", "HASH")]
    [index] = retries["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "due-index" and keys(index) == [("shard", "HASH"), ("due", "RANGE")]
    assert keys(table(sources["PRIMARY_ENVIRONMENT_SOURCE"])) == [("id", "HASH")]
    assert keys(table(sources["PRIMARY_DEAD_LETTER_SOURCE"])) == [("id", "HASH")]
    cache = sources["SECONDARY_CACHE_SOURCE"].rsplit("/", 1)[1]
    assert keys(table(sources["SECONDARY_CACHE_SOURCE"])) == [("key", "HASH")]
    ttl = ddb.describe_time_to_live(TableName=cache)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_server)
    assert sqs.get_queue_url(QueueName=sources["SECONDARY_RETRY_SOURCE"].rsplit(":", 1)[1])["QueueUrl"]
    sns = boto3.client("sns", region_name=REGION, endpoint_url=moto_server)
    assert sns.get_topic_attributes(TopicArn=sns_topic)["Attributes"]["TopicArn"] == sns_topic

    assert delete_resources(settings, sleep=no_wait) == [f"deleted {a}" for a in expected]
    assert delete_resources(settings, sleep=no_wait) == [f"missing {a}" for a in expected]
    assert kinesis.list_streams()["StreamNames"].count(expected[0].rsplit("/", 1)[1]) == 0


def test_dynamodb_log_table_gets_its_stream(moto_server: str) -> None:
    import boto3

    from fsmlog.resources import create_resources, delete_resources

    log = arn("dynamodb", f"table/log-{uuid.uuid4().hex[:8]}")
    settings = settings_for(moto_server, PRIMARY_STREAM_SOURCE=log)
    assert create_resources(settings, sleep=lambda s: None) == [f"created {log}"]
    t = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_server).describe_table(
        TableName=log.rsplit("/", 1)[1])["Table"]
    assert [(k["AttributeName"], k["KeyType"]) for k in t["KeySchema"]] == [("cid", "HASH"), ("seq", "RANGE")]
    assert t["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    assert delete_resources(settings, sleep=lambda s: None) == [f"deleted {log}"]


def test_one_table_for_two_layouts_is_refused(sources: dict[str, str]) -> None:
    from eventlog.settings import load_settings
    from fsmlog.resources import named_resources

    shared = arn("dynamodb", "table/shared")
    settings = load_settings(environ={}, PRIMARY_CACHE_SOURCE=shared, PRIMARY_ENVIRONMENT_SOURCE=shared)
    with pytest.raises(SettingsError, match="PRIMARY_ENVIRONMENT_SOURCE and PRIMARY_CACHE_SOURCE"):
        named_resources(settings)


def test_sqlite_only_settings_name_nothing_to_create() -> None:
    from eventlog.settings import load_settings
    from fsmlog.resources import create_resources, delete_resources

    settings = load_settings(environ={})
    assert create_resources(settings) == [] and delete_resources(settings) == []


# --- SAM template ------------------------------------------------------------------------------------


def _cfn_lint(path: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("cfn-lint")
    return subprocess.run([str(lint), str(path)], capture_output=True, text=True, timeout=300)


def test_sam_template_passes_cfn_lint(tmp_path: Path, sources: dict[str, str]) -> None:
    from eventlog.settings import load_settings
    from fsmlog.template import render_template

    settings = load_settings(environ={}, AWS_CHAOS={"kinesis": {"ThrottlingException": 0.01}},
                             METRICS_NAMESPACE="shop", **sources)
    text = render_template(settings, handler="handlers.lambda_handler", code_uri="src/")
    path = tmp_path / "template.yaml"
    path.write_text(text)
    result = _cfn_lint(path)
    assert result.returncode == 0, result.stdout + result.stderr

    doc = yaml.safe_load(text)
    resources = doc["Resources"]
    worker = resources["Worker"]["Properties"]
    assert worker["Handler"] == "handlers.lambda_handler" and worker["Runtime"] == "python3.11"
    assert worker["CodeUri"] == "src/"
    events = worker["Events"]
    kinesis = events["PrimaryStreamSourceTrigger"]
    assert kinesis["Type"] == "Kinesis"
    assert kinesis["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert kinesis["Properties"]["StartingPosition"] == "TRIM_HORIZON"
    assert kinesis["Properties"]["BisectBatchOnFunctionError"] is True
    assert events["SecondaryStreamSourceTrigger"]["Type"] == "DynamoDB"
    assert events["RetryTimer"] == {"Type": "Schedule", "Properties": {
        "Schedule": "rate(1 minute)", "Description": "fsmlog: run retries whose backoff has passed"}}
    assert worker["Environment"]["Variables"]["METRICS_NAMESPACE"] == "shop"
    assert worker["Environment"]["Variables"]["PRIMARY_CACHE_SOURCE"] == sources["PRIMARY_CACHE_SOURCE"]

    assert resources["SecondaryCacheSource"]["Properties"]["TimeToLiveSpecification"] == {
        "AttributeName": "ttl", "Enabled": True}
    retry_index = resources["PrimaryRetrySource"]["Properties"]["GlobalSecondaryIndexes"][0]
    assert retry_index["IndexName"] == "due-index"
    # one table for primary and secondary checkpoints; no table for the sqlite dead-letter secondary
    assert "SecondaryCheckpointSource" not in resources and "SecondaryDeadLetterSource" not in resources

    statements = resources["WorkerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    for st in statements:
        assert all(not a.endswith("*") for a in st["Action"]), st  # no wildcard actions
        if st["Resource"] == "*":
            assert st["Action"] == ["cloudwatch:PutMetricData"]
            assert st["Condition"] == {"StringEquals": {"cloudwatch:namespace": "shop"}}
    cache_actions = next(st["Action"] for st in statements
                         if st["Resource"] == [{"Fn::GetAtt": ["SecondaryCacheSource", "Arn"]}])
    assert sorted(cache_actions) == ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    assert worker["Role"] == {"Fn::GetAtt": ["WorkerRole", "Arn"]}


def test_sqs_and_sns_stream_sources_get_their_triggers(tmp_path: Path) -> None:
    from eventlog.settings import load_settings
    from fsmlog.template import render_template

    settings = load_settings(environ={}, PRIMARY_STREAM_SOURCE=arn("sqs", "log-queue"),
                             SECONDARY_STREAM_SOURCE=arn("sns", "log-topic"),
                             PRIMARY_RETRY_SOURCE=arn("kinesis", "stream/retry-stream"))
    text = render_template(settings)
    path = tmp_path / "template.yaml"
    path.write_text(text)
    result = _cfn_lint(path)
    assert result.returncode == 0, result.stdout + result.stderr
    events = yaml.safe_load(text)["Resources"]["Worker"]["Properties"]["Events"]
    assert events["PrimaryStreamSourceTrigger"]["Type"] == "SQS"
    assert events["PrimaryStreamSourceTrigger"]["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert events["SecondaryStreamSourceTrigger"]["Type"] == "SNS"
    assert events["PrimaryRetrySourceTrigger"]["Type"] == "Kinesis"


def test_failover_sides_in_another_region_are_used_not_created(tmp_path: Path) -> None:
    """The example settings keep a secondary stream and table in us-west-2: one stack deploys one
    region, so it grants access to them and names them, but creates only the home region's."""
    from eventlog.settings import load_settings
    from fsmlog.template import render_template

    example = Path(__file__).resolve().parents[2] / "examples" / "aws" / "settings.yaml"
    settings = load_settings({"FSMLOG_SETTINGS": str(example)})
    text = render_template(settings)
    path = tmp_path / "template.yaml"
    path.write_text(text)
    result = _cfn_lint(path)
    assert result.returncode == 0, result.stdout + result.stderr
    template = yaml.safe_load(text)
    created = [r["Properties"].get("Name") or r["Properties"].get("TableName")
               for r in template["Resources"].values() if r["Type"] in ("AWS::Kinesis::Stream", "AWS::DynamoDB::Table")]
    assert created.count("fsmlog-orders") == 1 and created.count("fsmlog-checkpoints") == 1
    policy = str(template["Resources"])
    assert "arn:aws:kinesis:us-west-2:123456789012:stream/fsmlog-orders" in policy
    assert "us-west-2" in template["Description"]
    env = template["Resources"]["WorkerFunction"]["Properties"]["Environment"]["Variables"] \
        if "WorkerFunction" in template["Resources"] else next(
            r["Properties"]["Environment"]["Variables"] for r in template["Resources"].values()
            if r["Type"] == "AWS::Serverless::Function")
    assert env["SECONDARY_STREAM_SOURCE"] == "arn:aws:kinesis:us-west-2:123456789012:stream/fsmlog-orders"


def test_throughput_knobs_are_stack_parameters_and_metrics_default_to_emf(tmp_path: Path) -> None:
    """Issue 10: ParallelizationFactor (1-10) and BatchSize on every stream trigger; EMF when no metrics source."""
    from eventlog.settings import load_settings
    from fsmlog.template import render_template

    settings = load_settings(environ={}, PRIMARY_STREAM_SOURCE=arn("kinesis", "stream/knobs"),
                             SECONDARY_STREAM_SOURCE=arn("dynamodb", "table/knobs-log"),
                             PRIMARY_CACHE_SOURCE=arn("dynamodb", "table/knobs-cache"))
    text = render_template(settings, parallelization_factor=4, batch_size=500, batching_window_s=0)
    path = tmp_path / "template.yaml"
    path.write_text(text)
    result = _cfn_lint(path)
    assert result.returncode == 0, result.stdout + result.stderr
    doc = yaml.safe_load(text)
    params = doc["Parameters"]
    assert params["ParallelizationFactor"]["Type"] == "Number"
    assert params["ParallelizationFactor"]["AllowedValues"] == [str(n) for n in range(1, 11)]
    assert params["ParallelizationFactor"]["Default"] == "4"
    assert params["BatchSize"]["Default"] == 500
    assert (params["BatchSize"]["MinValue"], params["BatchSize"]["MaxValue"]) == (1, 10000)
    assert params["MaximumBatchingWindowInSeconds"]["Default"] == 0
    assert params["MemorySize"]["Default"] == 512
    worker = doc["Resources"]["Worker"]["Properties"]
    assert worker["MemorySize"] == {"Ref": "MemorySize"}
    for name in ("PrimaryStreamSourceTrigger", "SecondaryStreamSourceTrigger"):  # Kinesis and DynamoDB streams
        props = worker["Events"][name]["Properties"]
        assert props["ParallelizationFactor"] == {"Ref": "ParallelizationFactor"}
        assert props["BatchSize"] == {"Ref": "BatchSize"}
        assert props["MaximumBatchingWindowInSeconds"] == {"Ref": "MaximumBatchingWindowInSeconds"}
    # no metrics source set: EMF lines (zero API calls), said in the environment, and no CloudWatch grant
    assert worker["Environment"]["Variables"]["PRIMARY_METRICS_SOURCE"] == "emf:"
    statements = doc["Resources"]["WorkerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert not any("cloudwatch:PutMetricData" in st["Action"] for st in statements)

    defaults = yaml.safe_load(render_template(settings))["Parameters"]
    assert (defaults["ParallelizationFactor"]["Default"], defaults["BatchSize"]["Default"]) == ("1", 100)
    assert yaml.safe_load(render_template(settings, memory_mb=1769))["Parameters"]["MemorySize"]["Default"] == 1769
    for bad in ({"parallelization_factor": 0}, {"parallelization_factor": 11}, {"batch_size": 10001},
                {"memory_mb": 64}):
        with pytest.raises(ValueError):
            render_template(settings, **bad)


def test_a_metrics_source_that_is_set_is_kept_and_no_stream_trigger_means_no_stream_parameters(tmp_path: Path) -> None:
    from eventlog.settings import load_settings
    from fsmlog.template import render_template

    metrics = arn("cloudwatch", "namespace/knobs")
    settings = load_settings(environ={}, PRIMARY_STREAM_SOURCE=arn("sqs", "knobs-queue"), PRIMARY_METRICS_SOURCE=metrics)
    text = render_template(settings)
    path = tmp_path / "template.yaml"
    path.write_text(text)
    result = _cfn_lint(path)  # an unused parameter would be a warning: none is declared
    assert result.returncode == 0, result.stdout + result.stderr
    doc = yaml.safe_load(text)
    assert list(doc["Parameters"]) == ["MemorySize", "FaultAlarmTopicArn"]  # the stream triggers' would be unused
    assert doc["Resources"]["Worker"]["Properties"]["Environment"]["Variables"]["PRIMARY_METRICS_SOURCE"] == metrics


def test_fault_alarms_are_an_optional_parameter_summing_failovers_and_lost_leases(tmp_path: Path) -> None:
    """Issue 15: FaultAlarmTopicArn (empty by default: no alarm) creates alarms on Failovers and LeaseLost."""
    from eventlog.settings import load_settings
    from fsmlog.template import render_template

    settings = load_settings(environ={}, PRIMARY_STREAM_SOURCE=arn("kinesis", "stream/alarms"),
                             SECONDARY_STREAM_SOURCE=arn("kinesis", "stream/alarms-2"),
                             PRIMARY_CACHE_SOURCE=arn("dynamodb", "table/alarms-cache"), METRICS_NAMESPACE="shop")
    text = render_template(settings)
    path = tmp_path / "template.yaml"
    path.write_text(text)
    result = _cfn_lint(path)
    assert result.returncode == 0, result.stdout + result.stderr
    doc = yaml.safe_load(text)
    assert doc["Parameters"]["FaultAlarmTopicArn"]["Default"] == ""
    assert doc["Conditions"]["FaultAlarmsOn"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "FaultAlarmTopicArn"}, ""]}]}
    queries = {}
    for name in ("FailoverAlarm", "LeaseLostAlarm"):
        alarm = doc["Resources"][name]
        assert alarm["Type"] == "AWS::CloudWatch::Alarm" and alarm["Condition"] == "FaultAlarmsOn"
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "FaultAlarmTopicArn"}]
        (query,) = alarm["Properties"]["Metrics"]
        queries[name] = query["Expression"]
    assert queries == {"FailoverAlarm": 'SELECT SUM(Failovers) FROM SCHEMA("shop", source)',
                       "LeaseLostAlarm": 'SELECT SUM(LeaseLost) FROM SCHEMA("shop", machine, side)'}
