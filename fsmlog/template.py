"""An AWS SAM template for the settings: resources, the worker Lambda, its triggers and a least-privilege role.

The template creates the same resources as ``fsmlog resources create`` (streams,
tables with their keys/indexes/TTL/streams, queues, topics), one function that
every stream source triggers (Kinesis and DynamoDB streams with
``ReportBatchItemFailures``, bisection and ``TRIM_HORIZON``; SQS; SNS), the
one-minute retry timer invoking the same function, and an explicit IAM role:
only the actions fsmlog's backends call, only on the resources above (CloudWatch
``PutMetricData`` cannot be scoped to a resource, so it is scoped to the
namespace). An explicit role also stops SAM from attaching its broad managed
policies for the event sources.

Every stream a record can be written to is consumed (docs/GUARANTEES.md: whatever
is written to a secondary is read from there too): a secondary stream in the
stack's region gets its trigger like the primary; an SNS topic in another
region is subscribed across regions; a Kinesis stream, DynamoDB table or SQS
queue in another region cannot trigger a function here (event source mappings
are regional), so the template says so in its description and outputs, and
``render_template(settings, region=R)`` (``fsmlog template --region R``)
renders the stack for region R, whose function consumes the streams there.

SNS invokes the function asynchronously: after Lambda's attempts (two retries)
an event would be dropped, so whenever an SNS topic triggers the function the
template adds an SQS queue (``AsyncFailureQueue``, 14 days) as the function's
on-failure destination (``EventInvokeConfig``) and as the SNS subscriptions'
dead-letter queue (``RedrivePolicy``), so a record that could not be handled is
kept, visibly, instead of lost.

Throughput knobs are stack parameters, so they change with a redeploy, not a new
template: ``ParallelizationFactor`` (1-10: concurrent batches per shard; Lambda keeps
each partition key's records in order, and fsmlog's partition key is the machine's
correlation id, so a machine's steps still run one after another), ``BatchSize``
(records per invocation) and ``MaximumBatchingWindowInSeconds`` (how long Lambda
gathers a batch before invoking), on every Kinesis and DynamoDB stream trigger, and the
function's ``MemorySize`` (Lambda's CPU share grows with it: one full vCPU at 1,769 MB).
Metrics go to CloudWatch Embedded Metric Format lines (``emf:``, zero API calls)
unless the settings name a metrics source.

Elasticache clusters are not created here: they need the account's VPC,
subnets and security groups, which belong to the network stack.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from eventlog.settings import DEFAULTS, SOURCE_SETTINGS, Settings

from .resources import Resource, TableSpec, named_resources

FUNCTION = "Worker"
HANDLER = "handlers.lambda_handler"
CODE_URI = "build/lambda"  # what `fsmlog package` builds, relative to the template (as SAM reads CodeUri)
ARCHITECTURES = ("x86_64", "arm64")
ROLE = "WorkerRole"
LOG_GROUP = "WorkerLogGroup"
ASYNC_FAILURES = "AsyncFailureQueue"  # on-failure destination of async (SNS) invocations
ASYNC_FAILURES_POLICY = "AsyncFailureQueuePolicy"
FUNCTION_TIMEOUT_S = 300
QUEUE_VISIBILITY_S = 900  # SQS event sources need at least the function's timeout
QUEUE_RETENTION_S = 1209600  # 14 days, SQS' maximum
ASYNC_RETRY_ATTEMPTS = 2  # Lambda's own maximum for asynchronous invocations
ASYNC_MAX_AGE_S = 21600  # 6 hours, Lambda's maximum
MAX_DESCRIPTION = 1024  # characters CloudFormation accepts in a template's Description
REGIONAL_TRIGGERS = ("kinesis", "dynamodb", "sqs")  # event source mappings only read their own region

# DynamoDB item actions per source kind (the union applies to a table serving several kinds)
TABLE_ACTIONS: dict[str, tuple[str, ...]] = {
    "STREAM": ("BatchWriteItem", "PutItem", "GetItem", "Query"),
    "CHECKPOINT": ("GetItem", "PutItem", "UpdateItem"),
    "RETRY": ("BatchWriteItem", "PutItem", "UpdateItem", "DeleteItem", "GetItem", "Query"),
    "CACHE": ("GetItem", "PutItem", "UpdateItem"),
    "ENVIRONMENT": ("GetItem", "PutItem"),
    "DEAD_LETTER": ("PutItem", "GetItem", "DeleteItem", "Scan", "Query"),
}
TABLE_STREAM_ACTIONS = ("DescribeStream", "GetRecords", "GetShardIterator", "ListStreams")
KINESIS_ACTIONS = ("PutRecord", "PutRecords", "DescribeStream", "DescribeStreamSummary", "GetRecords",
                   "GetShardIterator", "ListShards", "SubscribeToShard")
SQS_ACTIONS = ("SendMessage", "SendMessageBatch", "ReceiveMessage", "DeleteMessage", "DeleteMessageBatch",
               "ChangeMessageVisibility", "ChangeMessageVisibilityBatch", "GetQueueUrl", "GetQueueAttributes")
SNS_ACTIONS = ("Publish",)
# the stack parameters every Kinesis / DynamoDB stream trigger reads (defaults: render_template's arguments)
PARALLELIZATION = "ParallelizationFactor"
BATCH_SIZE = "BatchSize"
BATCHING_WINDOW = "MaximumBatchingWindowInSeconds"
MAX_PARALLELIZATION = 10  # Lambda's limit of concurrent batches per shard
MAX_BATCH_SIZE = 10_000  # Lambda's limit for Kinesis and DynamoDB stream event sources
MAX_BATCHING_WINDOW_S = 300
MEMORY = "MemorySize"
MIN_MEMORY_MB, MAX_MEMORY_MB = 128, 10_240  # Lambda's limits
DEFAULT_METRICS = "emf:"  # metrics when the settings name none: EMF log lines, zero API calls
ALARM_TOPIC = "FaultAlarmTopicArn"  # optional: an SNS topic; set, the stack creates the fault alarms
ALARMS_ON = "FaultAlarmsOn"  # the condition: a topic was given
# (logical id, metric, its dimensions, what it means): summed over every dimension value
FAULT_ALARMS = (
    ("FailoverAlarm", "Failovers", "source",
     "fsmlog: a source's primary failed and its secondary served calls (dimension source: STREAM, CACHE, ...)"),
    ("LeaseLostAlarm", "LeaseLost", "machine, side",
     "fsmlog: a worker lost a machine's lease before its commit (an action outlasted LEASE_SECONDS, or "
     "a cache failover split the leases)"),
)
STREAM_EVENT = {
    "StartingPosition": "TRIM_HORIZON",
    "BatchSize": {"Ref": BATCH_SIZE},
    "MaximumBatchingWindowInSeconds": {"Ref": BATCHING_WINDOW},
    "ParallelizationFactor": {"Ref": PARALLELIZATION},
    "BisectBatchOnFunctionError": True,
    "FunctionResponseTypes": ["ReportBatchItemFailures"],
}


def _memory_parameter(memory_mb: int) -> dict[str, Any]:
    if not MIN_MEMORY_MB <= memory_mb <= MAX_MEMORY_MB:
        raise ValueError(f"memory size {memory_mb} MB is outside {MIN_MEMORY_MB}..{MAX_MEMORY_MB}")
    return {MEMORY: {
        "Type": "Number", "Default": memory_mb, "MinValue": MIN_MEMORY_MB, "MaxValue": MAX_MEMORY_MB,
        "Description": "The function's memory in MB. Lambda's CPU share grows with it (one full vCPU at 1,769 MB); "
                       "a busy shard's batches are CPU-bound, so give them 1769 or more.",
    }}


def _fault_alarms(namespace: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The alarm parameter, its condition and the alarms: an example to copy, off unless a topic is given.

    Each alarm sums its metric over every dimension value with a Metrics Insights query, so a new
    machine or source is covered without editing the alarm."""
    parameter = {ALARM_TOPIC: {
        "Type": "String", "Default": "",
        "Description": "Optional: an SNS topic ARN to notify when a source fails over (Failovers) or a lease "
                       "is lost (LeaseLost). Empty: no alarms are created.",
    }}
    condition = {ALARMS_ON: {"Fn::Not": [{"Fn::Equals": [{"Ref": ALARM_TOPIC}, ""]}]}}
    alarms = {}
    for logical, metric, dimensions, meaning in FAULT_ALARMS:
        alarms[logical] = {"Type": "AWS::CloudWatch::Alarm", "Condition": ALARMS_ON, "Properties": {
            "AlarmDescription": meaning,
            "AlarmActions": [{"Ref": ALARM_TOPIC}],
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 0,
            "EvaluationPeriods": 1,
            "DatapointsToAlarm": 1,
            "TreatMissingData": "notBreaching",  # no datum: nothing failed over
            "Metrics": [{"Id": "q1", "ReturnData": True, "Period": 300,
                         "Expression": f'SELECT SUM({metric}) FROM SCHEMA("{namespace}", {dimensions})'}],
        }}
    return parameter, condition, alarms


def _parameters(parallelization_factor: int, batch_size: int, batching_window_s: int) -> dict[str, Any]:
    """The stack's throughput parameters, with the given defaults (checked against Lambda's limits)."""
    if not 1 <= parallelization_factor <= MAX_PARALLELIZATION:
        raise ValueError(f"parallelization factor {parallelization_factor} is outside 1..{MAX_PARALLELIZATION}")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch size {batch_size} is outside 1..{MAX_BATCH_SIZE}")
    if not 0 <= batching_window_s <= MAX_BATCHING_WINDOW_S:
        raise ValueError(f"batching window {batching_window_s} s is outside 0..{MAX_BATCHING_WINDOW_S}")
    return {
        PARALLELIZATION: {
            "Type": "Number", "Default": str(parallelization_factor),
            "AllowedValues": [str(n) for n in range(1, MAX_PARALLELIZATION + 1)],
            "Description": "Concurrent batches per shard (Kinesis and DynamoDB stream triggers). Each "
                           "machine's records stay in order (partition key = correlation id). One shard takes "
                           "1,000 records/s; raise this until the function keeps up (see the README).",
        },
        BATCH_SIZE: {
            "Type": "Number", "Default": batch_size, "MinValue": 1, "MaxValue": MAX_BATCH_SIZE,
            "Description": "Records per invocation from a stream: larger batches share their round trips "
                           "over more steps.",
        },
        BATCHING_WINDOW: {
            "Type": "Number", "Default": batching_window_s, "MinValue": 0, "MaxValue": MAX_BATCHING_WINDOW_S,
            "Description": "Seconds Lambda may wait to fill a batch (0: invoke as soon as records arrive; "
                           "each step of a machine may wait this long).",
        },
    }


def _camel(setting: str) -> str:
    return "".join(part.capitalize() for part in setting.lower().split("_"))


def _kinds(res: Resource) -> list[str]:
    """``PRIMARY_CACHE_SOURCE`` -> ``CACHE`` for every setting naming the resource."""
    return [s.split("_", 1)[1].rsplit("_", 1)[0] for s in res.settings]


def _getatt(logical: str, attr: str = "Arn") -> dict[str, Any]:
    return {"Fn::GetAtt": [logical, attr]}


def _resource_arn(res: Resource, logical: str | None) -> Any:
    """The resource's ARN in the template: a reference when the stack creates it, else the literal ARN."""
    if logical is None:
        return res.arn
    return {"Ref": logical} if res.service == "sns" else _getatt(logical)


def _sub_arn(res: Resource, logical: str | None, suffix: str) -> Any:
    return f"{res.arn}{suffix}" if logical is None else {"Fn::Sub": f"${{{logical}.Arn}}{suffix}"}


def _region(arn: str) -> str:
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 else ""


def _home_region(settings: Settings, named: list[Resource]) -> str:
    """The region the stack deploys to: the primary stream's, else AWS_REGION, else the first resource's."""
    primary = str(settings.PRIMARY_STREAM_SOURCE or "")
    if primary.startswith("arn:") and _region(primary):
        return _region(primary)
    return str(settings.AWS_REGION or (named and _region(named[0].arn)) or "")


def _table(name: str, spec: TableSpec) -> dict[str, Any]:
    from .resources import create_table_params

    props = create_table_params(name, spec)
    if spec.stream:
        props["StreamSpecification"] = {"StreamViewType": "NEW_IMAGE"}  # CloudFormation has no StreamEnabled
    if spec.ttl_attribute:
        props["TimeToLiveSpecification"] = {"AttributeName": spec.ttl_attribute, "Enabled": True}
    return props


def _cfn_resource(res: Resource) -> dict[str, Any]:
    from eventlog.aws import parse_arn

    name = parse_arn(res.arn).name
    stateful = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
    if res.service == "kinesis":
        return {"Type": "AWS::Kinesis::Stream", **stateful,
                "Properties": {"Name": name, "ShardCount": 1, "RetentionPeriodHours": 168,
                               "StreamEncryption": {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"}}}
    if res.service == "dynamodb":
        assert res.table is not None
        return {"Type": "AWS::DynamoDB::Table", **stateful, "Properties": _table(name, res.table)}
    if res.service == "sqs":
        props: dict[str, Any] = {"QueueName": name, "VisibilityTimeout": QUEUE_VISIBILITY_S,
                                 "MessageRetentionPeriod": 1209600, "SqsManagedSseEnabled": True}
        if name.endswith(".fifo"):
            props["FifoQueue"] = True
        return {"Type": "AWS::SQS::Queue", **stateful, "Properties": props}
    props = {"TopicName": name}
    if name.endswith(".fifo"):
        props["FifoTopic"] = True
    return {"Type": "AWS::SNS::Topic", "Properties": props}


def _statements(res: Resource, logical: str | None) -> list[dict[str, Any]]:
    arn = _resource_arn(res, logical)
    if res.service == "kinesis":
        return [{"Effect": "Allow", "Action": [f"kinesis:{a}" for a in KINESIS_ACTIONS], "Resource": arn}]
    if res.service == "sqs":
        return [{"Effect": "Allow", "Action": [f"sqs:{a}" for a in SQS_ACTIONS], "Resource": arn}]
    if res.service == "sns":
        return [{"Effect": "Allow", "Action": [f"sns:{a}" for a in SNS_ACTIONS], "Resource": arn}]
    actions: list[str] = []
    for kind in _kinds(res):
        actions += [a for a in TABLE_ACTIONS[kind] if a not in actions]
    resources: list[Any] = [arn]
    assert res.table is not None
    if res.table.indexes:
        resources.append(_sub_arn(res, logical, "/index/*"))
    out = [{"Effect": "Allow", "Action": [f"dynamodb:{a}" for a in actions], "Resource": resources}]
    if res.table.stream:
        out.append({"Effect": "Allow", "Action": [f"dynamodb:{a}" for a in TABLE_STREAM_ACTIONS],
                    "Resource": _sub_arn(res, logical, "/stream/*")})
    return out


def _triggered(res: Resource) -> bool:
    """Whether a resource delivers records the function must consume: every stream source, primary or
    secondary (and Kinesis/SNS retry sources, which deliver at once)."""
    kinds = _kinds(res)
    return "STREAM" in kinds or ("RETRY" in kinds and res.service in ("kinesis", "sns"))


def _event(res: Resource, logical: str | None, *, home: str = "",
           dead_letters: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The trigger for a stream source (and for Kinesis/SNS retry sources, which deliver at once).

    ``logical`` is None for a resource the stack does not create (another region): only an SNS
    topic can trigger the function from there. ``dead_letters`` is the SNS subscriptions'
    dead-letter queue (its ARN), for topics in the stack's region."""
    if not _triggered(res):
        return None
    if logical is None:
        if res.service != "sns":
            return None  # a regional event source mapping cannot read another region
        props: dict[str, Any] = {"Topic": res.arn}
        if _region(res.arn) and _region(res.arn) != home:
            props["Region"] = _region(res.arn)
        return {"Type": "SNS", "Properties": props}
    if res.service == "kinesis":
        return {"Type": "Kinesis", "Properties": {"Stream": _getatt(logical), **STREAM_EVENT}}
    if res.service == "dynamodb":
        return {"Type": "DynamoDB", "Properties": {"Stream": _getatt(logical, "StreamArn"), **STREAM_EVENT}}
    if res.service == "sqs":
        return {"Type": "SQS", "Properties": {"Queue": _getatt(logical), "BatchSize": 10,
                                              "FunctionResponseTypes": ["ReportBatchItemFailures"]}}
    props = {"Topic": {"Ref": logical}}
    if dead_letters is not None:
        props["RedrivePolicy"] = {"deadLetterTargetArn": dead_letters}
    return {"Type": "SNS", "Properties": props}


def _reads_streams(events: dict[str, Any]) -> bool:
    """Whether any trigger is a stream event source mapping (the only readers of the throughput parameters)."""
    return any(e.get("Type") in ("Kinesis", "DynamoDB") for e in events.values())


def untriggered_streams(settings: Settings, region: str | None = None) -> list[tuple[str, str]]:
    """``(arn, region)`` of every stream source the stack for ``region`` (default: the home region)
    cannot trigger from: Kinesis streams, DynamoDB tables and SQS queues in another region. Each needs
    the stack of its own region (``fsmlog template --region R``)."""
    named = named_resources(settings)
    home = region or _home_region(settings, named)
    return [(res.arn, _region(res.arn)) for res in named
            if _triggered(res) and res.service in REGIONAL_TRIGGERS
            and home and _region(res.arn) and _region(res.arn) != home]


def _environment(settings: Settings, logical_of: dict[str, str], resources: dict[str, Resource]) -> dict[str, Any]:
    env: dict[str, Any] = {}
    for setting in SOURCE_SETTINGS:
        value = settings.get(setting)
        if not value and setting == "PRIMARY_METRICS_SOURCE":
            value = DEFAULT_METRICS  # said explicitly, not left to the Lambda default
        if not value:
            continue
        res = resources.get(value)
        env[setting] = _resource_arn(res, logical_of[value]) if res is not None and value in logical_of \
            else str(value)
    for name, default in DEFAULTS.items():
        if name in SOURCE_SETTINGS or name in ("ENDPOINTS", "AWS_REGION"):
            continue
        value = settings.get(name, default)
        if value == default and name != "METRICS_NAMESPACE":
            continue
        env[name] = json.dumps(value) if isinstance(value, dict) else str(value)
    return env


def render_template(settings: Settings, *, handler: str = HANDLER, code_uri: str = CODE_URI,
                    runtime: str = "python3.11", architecture: str | None = None, shards: int = 1,
                    region: str | None = None, parallelization_factor: int = 1, batch_size: int = 100,
                    batching_window_s: int = 1, memory_mb: int = 512) -> str:
    """The SAM template (YAML) deploying fsmlog for ``settings``.

    ``region`` renders the stack for that region instead of the home region
    (the primary stream's): it creates and triggers the resources there, and
    only grants access to the others. A failover side in another region
    needs its region's stack for its stream to be consumed.

    ``parallelization_factor``, ``batch_size`` and ``batching_window_s`` are the defaults of the
    stack parameters ``ParallelizationFactor``, ``BatchSize`` and ``MaximumBatchingWindowInSeconds``
    that every stream trigger reads, and ``memory_mb`` the default of ``MemorySize`` (a deploy may
    override each). ``code_uri`` is the directory ``fsmlog package`` builds (relative to the
    template file); ``architecture`` (``x86_64`` or ``arm64``) sets ``Architectures``."""
    if architecture is not None and architecture not in ARCHITECTURES:
        raise ValueError(f"architecture {architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    parameters = _parameters(parallelization_factor, batch_size, batching_window_s)
    memory = _memory_parameter(memory_mb)
    named = named_resources(settings)
    resources: dict[str, Any] = {}
    logical_of: dict[str, str] = {}
    statements: list[dict[str, Any]] = []
    events: dict[str, Any] = {}
    home = region or _home_region(settings, named)
    elsewhere: list[str] = []
    untriggered: list[Resource] = []
    local = [res for res in named if not (home and _region(res.arn) and _region(res.arn) != home)]
    # asynchronous (SNS) triggers get a queue that keeps what Lambda could not handle
    async_triggers = any(_triggered(res) and res.service == "sns" for res in named)
    dead_letters = _getatt(ASYNC_FAILURES) if async_triggers else None
    local_topics: list[Any] = []
    for res in named:
        if res not in local:
            # another region (a failover side): the stack cannot create it, but may use it
            elsewhere.append(res.arn)
            statements += _statements(res, None)
            event = _event(res, None, home=home)
            if event is not None:
                events[f"{_camel(res.settings[0])}Trigger"] = event
            elif _triggered(res):
                untriggered.append(res)
            continue
        logical = _camel(res.settings[0])
        logical_of[res.arn] = logical
        resources[logical] = _cfn_resource(res)
        if res.service == "kinesis":
            resources[logical]["Properties"]["ShardCount"] = shards
        statements += _statements(res, logical)
        event = _event(res, logical, home=home, dead_letters=dead_letters)
        if event is not None:
            events[f"{logical}Trigger"] = event
            if res.service == "sns":
                local_topics.append({"Ref": logical})
    events["RetryTimer"] = {"Type": "Schedule", "Properties": {
        "Schedule": "rate(1 minute)", "Description": "fsmlog: run retries whose backoff has passed"}}

    namespace = str(settings.METRICS_NAMESPACE or "fsmlog")
    alarm_parameter, alarm_condition, alarms = _fault_alarms(namespace)
    resources.update(alarms)
    if any(str(settings.get(s) or "").split(":")[2:3] == ["cloudwatch"] for s in SOURCE_SETTINGS):
        statements.append({"Effect": "Allow", "Action": ["cloudwatch:PutMetricData"], "Resource": "*",
                           "Condition": {"StringEquals": {"cloudwatch:namespace": namespace}}})
    statements.append({"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                       "Resource": _getatt(LOG_GROUP)})
    if async_triggers:
        resources[ASYNC_FAILURES] = {"Type": "AWS::SQS::Queue", "DeletionPolicy": "Retain",
                                     "UpdateReplacePolicy": "Retain", "Properties": {
                                         "MessageRetentionPeriod": QUEUE_RETENTION_S,
                                         "VisibilityTimeout": QUEUE_VISIBILITY_S,
                                         "SqsManagedSseEnabled": True}}
        statements.append({"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": dead_letters})
        if local_topics:  # the subscriptions' dead-letter queue: SNS itself sends there
            resources[ASYNC_FAILURES_POLICY] = {"Type": "AWS::SQS::QueuePolicy", "Properties": {
                "Queues": [{"Ref": ASYNC_FAILURES}],
                "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage", "Resource": dead_letters,
                    "Condition": {"ArnEquals": {"aws:SourceArn": local_topics}}}]}}}

    resources[LOG_GROUP] = {"Type": "AWS::Logs::LogGroup", "Properties": {
        "LogGroupName": {"Fn::Sub": "/aws/lambda/${AWS::StackName}-worker"}, "RetentionInDays": 30}}
    resources[ROLE] = {"Type": "AWS::IAM::Role", "Properties": {
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
        "Policies": [{"PolicyName": "fsmlog-worker",
                      "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}],
    }}
    function: dict[str, Any] = {
        "FunctionName": {"Fn::Sub": "${AWS::StackName}-worker"},
        "Description": "fsmlog worker: runs machine steps from the stream and due retries",
        "Handler": handler,
        "Runtime": runtime,
        "CodeUri": code_uri,
        **({"Architectures": [architecture]} if architecture else {}),
        "Timeout": FUNCTION_TIMEOUT_S,
        "MemorySize": {"Ref": MEMORY},
        "Role": _getatt(ROLE),
        "Environment": {"Variables": _environment(settings, logical_of, {r.arn: r for r in named})},
        "Events": events,
    }
    if async_triggers:
        function["EventInvokeConfig"] = {
            "MaximumRetryAttempts": ASYNC_RETRY_ATTEMPTS,
            "MaximumEventAgeInSeconds": ASYNC_MAX_AGE_S,
            "DestinationConfig": {"OnFailure": {"Type": "SQS", "Destination": dead_letters}},
        }
    resources[FUNCTION] = {"Type": "AWS::Serverless::Function", "DependsOn": [LOG_GROUP], "Properties": function}
    description = "fsmlog: finite-state-machine workflows on AWS Lambda, event-sourced"
    if region:
        description += f" (the stack for region {home})"
    if elsewhere:
        description += (f" (resources in other regions, created with `fsmlog resources create` there: "
                        f"{', '.join(elsewhere)})")
    outputs: dict[str, Any] = {
        "WorkerFunctionArn": {"Value": _getatt(FUNCTION)},
        "WorkerRoleArn": {"Value": _getatt(ROLE)},
    }
    if async_triggers:
        outputs["AsyncFailureQueueArn"] = {
            "Description": "SNS records Lambda could not handle after its retries (re-publish them)",
            "Value": dead_letters}
    if untriggered:
        regions = sorted({_region(r.arn) for r in untriggered})
        commands = "; ".join(f"fsmlog template --region {r}" for r in regions)
        description += (f" (streams in other regions are consumed by their region's stack, not this one: "
                        f"{', '.join(r.arn for r in untriggered)}; deploy `{commands}` there)")
        outputs["StreamsConsumedElsewhere"] = {
            "Description": f"streams this stack cannot trigger from; deploy `{commands}` in their region",
            "Value": ", ".join(r.arn for r in untriggered)}
    if len(description) > MAX_DESCRIPTION:  # CloudFormation's limit; the outputs keep the full lists
        description = description[:MAX_DESCRIPTION - 3] + "..."
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Description": description,
        "Parameters": {**(parameters if _reads_streams(events) else {}), **memory, **alarm_parameter},
        "Conditions": alarm_condition,
        "Resources": resources,
        "Outputs": outputs,
    }
    return yaml.dump(template, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


class _Dumper(yaml.SafeDumper):
    """Plain YAML without anchors/aliases (the triggers share their settings dict)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
