"""`fsmlog package` builds a Lambda artifact that runs on its own: its handler, in a clean interpreter
with nothing but the artifact on its path, drives an order machine to the end from Kinesis-shaped
batches and timer events.

Integration: pip downloads the manylinux wheels from PyPI (set PIP_FIND_LINKS / PIP_NO_INDEX to
build from a local wheel directory instead).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from eventlog.backends.sqlite import SqliteLog
from eventlog.codec import decode, encode
from eventlog.event import Event
from fsmlog.package import MARKER, function_spec
from projections.definition import load

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ORDERS = ROOT / "examples" / "orders"
AWS_SETTINGS = ROOT / "examples" / "aws" / "settings.yaml"
CONTEXT = {"sku": "book-42", "quantity": 2, "amount": "39.90", "customer": "ada@example.com"}


def _fsmlog(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSMLOG_")}
    return subprocess.run([sys.executable, "-m", "fsmlog.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A user's project: the order example, its template for the AWS settings, and the built artifact."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(ORDERS, root / "orders", ignore=shutil.ignore_patterns("test_*", "__pycache__"))
    done = _fsmlog("--settings", str(AWS_SETTINGS), "template", "--out", "template.yaml", cwd=root)
    assert done.returncode == 0, done.stderr
    done = _fsmlog("--settings", str(AWS_SETTINGS), "package", "orders/fsm.yaml", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "sam deploy --guided --template-file template.yaml" in done.stdout
    return root


def test_the_artifact_holds_what_the_function_imports_and_nothing_of_the_cli(project):
    spec = function_spec(project / "template.yaml")
    art = spec.code_uri
    assert art == project / "build" / "lambda" and (art / MARKER).exists()
    for name in ("eventlog", "projections", "handlers", "fsm.yaml", "order_actions.py", "msgpack", "yaml",
                 "tenacity", "boto3"):
        assert (art / name).exists(), name
    assert sorted(p.name for p in (art / "fsmlog").iterdir() if p.suffix == ".py") == ["__init__.py"]
    assert not (art / "replay").exists()
    names = [line.split("==")[0] for line in (art / "requirements.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert names == ["msgpack", "PyYAML", "tenacity", "boto3"]
    # the C extension is the Linux wheel for the runtime's Python, not whatever this machine has
    tag = spec.python_version.replace(".", "")
    assert list((art / "msgpack").glob(f"*.cpython-{tag}-x86_64-linux-gnu.so"))
    assert any(p.name.startswith("msgpack-") and p.suffix == ".dist-info" for p in art.iterdir())


DRIVER = r"""
import json, sys
art, handler_name, events_path, out_path = sys.argv[1:5]
sys.path[:0] = [art]
assert not any("site-packages" in p for p in sys.path), sys.path
import importlib, time
module, _, function = handler_name.rpartition(".")
handler = getattr(importlib.import_module(module), function)
from eventlog.backends.sqlite import SqliteLog
from eventlog.codec import decode
import base64, os

def kinesis(records):
    return {"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": r.key, "sequenceNumber": r.position,
                    "data": base64.b64encode(r.data).decode(), "approximateArrivalTimestamp": 1.5},
        "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": "shardId-000000000000:" + r.position,
        "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::123456789012:role/r",
        "awsRegion": "us-east-1", "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/fsmlog-orders",
    } for r in records]}

TIMER = {"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}
responses = [handler(json.load(open(events_path)), None)]
log = SqliteLog(os.environ["PRIMARY_STREAM_SOURCE"])
after = None
for _ in range(60):
    records = log.read(after, 100)
    if records:
        after = records[-1].position
        responses.append(handler(kinesis(records), None))
    else:
        responses.append(handler(TIMER, None))
        time.sleep(0.05)
    if any(decode(r.data).kind in ("completed", "failed", "aborted") for r in records):
        break
outside = sorted(n for n, m in list(sys.modules.items())
                 if getattr(m, "__file__", None) and not m.__file__.startswith(art)
                 and "site-packages" in m.__file__)
json.dump({"responses": responses, "outside": outside}, open(out_path, "w"))
"""


def test_the_templates_handler_runs_kinesis_batches_in_a_clean_interpreter(project, tmp_path):
    spec = function_spec(project / "template.yaml")
    art = spec.code_uri
    order = load(ORDERS / "fsm.yaml", check_actions=False).machine("order")
    cid = uuid.uuid4().hex
    start = Event.create("start", cid, "order", order.hash, 0, 0, order.initial.name, None, time.time(), CONTEXT)
    first = {"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": cid, "sequenceNumber": "1",
                    "data": __import__("base64").b64encode(encode(start)).decode(),
                    "approximateArrivalTimestamp": 1.5},
        "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": "shardId-000000000000:1",
        "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::123456789012:role/r",
        "awsRegion": "us-east-1", "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/fsmlog-orders",
    }]}
    events = tmp_path / "event.json"
    events.write_text(json.dumps(first))
    db = f"sqlite:///{tmp_path / 'lambda.db'}"
    env = {"PATH": os.environ.get("PATH", ""), "LAMBDA_TASK_ROOT": str(art),
           "AWS_LAMBDA_FUNCTION_NAME": "test-worker", "ORDERS_GATEWAY_DB": str(tmp_path / "gateway.db"),
           "RETRY_BASE_SECONDS": "0.05", "RETRY_CAP_SECONDS": "0.1",
           **{f"PRIMARY_{kind}_SOURCE": db for kind in ("STREAM", "CHECKPOINT", "RETRY", "CACHE", "ENVIRONMENT",
                                                          "METRICS", "DEAD_LETTER")}}
    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, "-I", "-S", "-c", DRIVER, str(art), spec.handler, str(events), str(out)],
                          cwd=art, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(out.read_text())
    assert seen["outside"] == []  # nothing came from an installed package: the artifact is complete
    batches = [r for r in seen["responses"] if "batchItemFailures" in r]
    assert batches and all(r["batchItemFailures"] == [] for r in batches)
    log = SqliteLog(db)
    try:
        mine = [decode(r.data) for r in log.read_key(cid)]
    finally:
        log.close()
    assert mine[-1].kind == "completed" and mine[-1].state == "done"
    assert [(e.state, e.event) for e in mine if e.kind == "step"] == [
        ("reserving", "reserved"), ("charging", "charged"), ("shipping", "shipped"), ("notifying", "notified")]
    assert any(e.kind == "retry" for e in mine)  # the example gateway's planned first failure, retried
