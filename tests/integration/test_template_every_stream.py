"""The SAM template consumes every stream a record can reach, and keeps what SNS could not deliver.

Issue 9, items 2 and 7: a secondary stream in another region got no trigger
(and no word about it), and SNS as stream source dropped a record after
Lambda's asynchronous attempts, with no on-failure destination.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from eventlog.settings import load_settings
from fsmlog.template import ASYNC_FAILURES, render_template, untriggered_streams

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "aws" / "settings.yaml"  # secondary stream in us-west-2
WEST_STREAM = "arn:aws:kinesis:us-west-2:123456789012:stream/fsmlog-orders"


def arn(service: str, resource: str, region: str = "us-east-1") -> str:
    return f"arn:aws:{service}:{region}:123456789012:{resource}"


def lint(tmp_path: Path, text: str, name: str = "template.yaml") -> None:
    path = tmp_path / name
    path.write_text(text)
    lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run([str(lint), str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def function(doc: dict) -> dict:
    return next(r["Properties"] for r in doc["Resources"].values() if r["Type"] == "AWS::Serverless::Function")


def test_a_secondary_stream_in_the_home_region_gets_its_own_trigger(tmp_path):
    settings = load_settings(environ={}, PRIMARY_STREAM_SOURCE=arn("kinesis", "stream/a"),
                             SECONDARY_STREAM_SOURCE=arn("kinesis", "stream/b"))
    text = render_template(settings)
    lint(tmp_path, text)
    events = function(yaml.safe_load(text))["Events"]
    assert events["PrimaryStreamSourceTrigger"]["Type"] == "Kinesis"
    assert events["SecondaryStreamSourceTrigger"]["Type"] == "Kinesis"
    assert events["SecondaryStreamSourceTrigger"]["Properties"]["Stream"] == {
        "Fn::GetAtt": ["SecondaryStreamSource", "Arn"]}
    assert untriggered_streams(settings) == []


def test_a_secondary_stream_in_another_region_is_named_and_its_region_stack_triggers_it(tmp_path):
    settings = load_settings({"FSMLOG_SETTINGS": str(EXAMPLE)})
    assert untriggered_streams(settings) == [(WEST_STREAM, "us-west-2")]

    home = yaml.safe_load(render_template(settings))
    assert "SecondaryStreamSourceTrigger" not in function(home)["Events"]  # a mapping cannot cross regions
    assert WEST_STREAM in home["Outputs"]["StreamsConsumedElsewhere"]["Value"]
    assert "fsmlog template --region us-west-2" in home["Description"]

    text = render_template(settings, region="us-west-2")
    lint(tmp_path, text, "west.yaml")
    west = yaml.safe_load(text)
    trigger = function(west)["Events"]["SecondaryStreamSourceTrigger"]
    assert trigger["Type"] == "Kinesis" and trigger["Properties"]["Stream"] == {
        "Fn::GetAtt": ["SecondaryStreamSource", "Arn"]}
    assert west["Resources"]["SecondaryStreamSource"]["Properties"]["Name"] == "fsmlog-orders"
    assert "PrimaryStreamSource" not in west["Resources"]  # us-east-1's: the home stack's
    # the region's function reads the same settings: both streams, every store
    assert function(west)["Environment"]["Variables"]["PRIMARY_STREAM_SOURCE"] == settings.PRIMARY_STREAM_SOURCE


def test_fsmlog_template_says_which_streams_need_their_region_stack(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("FSMLOG_") and not k.endswith("_SOURCE")}
    env.update(PYTHONPATH=str(ROOT), FSMLOG_SETTINGS=str(EXAMPLE))
    proc = subprocess.run([sys.executable, "-m", "fsmlog.cli", "template"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert WEST_STREAM in proc.stderr and "--region us-west-2" in proc.stderr
    west = subprocess.run([sys.executable, "-m", "fsmlog.cli", "template", "--region", "us-west-2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert west.returncode == 0, west.stderr
    assert "SecondaryStreamSourceTrigger" in west.stdout


def test_sns_stream_sources_keep_what_lambda_could_not_handle(tmp_path):
    remote_topic = arn("sns", "log-topic-b", region="eu-west-1")
    settings = load_settings(environ={}, PRIMARY_STREAM_SOURCE=arn("sns", "log-topic"),
                             SECONDARY_STREAM_SOURCE=remote_topic, PRIMARY_RETRY_SOURCE=arn("sqs", "retries"))
    text = render_template(settings)
    lint(tmp_path, text)
    doc = yaml.safe_load(text)
    worker = function(doc)
    queue = {"Fn::GetAtt": [ASYNC_FAILURES, "Arn"]}
    assert doc["Resources"][ASYNC_FAILURES]["Type"] == "AWS::SQS::Queue"
    config = worker["EventInvokeConfig"]
    assert config["DestinationConfig"]["OnFailure"] == {"Type": "SQS", "Destination": queue}
    assert config["MaximumRetryAttempts"] == 2
    events = worker["Events"]
    assert events["PrimaryStreamSourceTrigger"]["Properties"]["RedrivePolicy"] == {"deadLetterTargetArn": queue}
    # a topic in another region is subscribed across regions: its records are consumed too
    assert events["SecondaryStreamSourceTrigger"]["Properties"] == {"Topic": remote_topic, "Region": "eu-west-1"}
    statements = doc["Resources"]["WorkerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert {"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": queue} in statements
    assert "AsyncFailureQueueArn" in doc["Outputs"]


def test_without_sns_there_is_no_failure_queue():
    settings = load_settings(environ={}, PRIMARY_STREAM_SOURCE=arn("kinesis", "stream/a"))
    doc = yaml.safe_load(render_template(settings))
    assert ASYNC_FAILURES not in doc["Resources"] and "EventInvokeConfig" not in function(doc)
