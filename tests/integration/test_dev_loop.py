"""``fsmlog dev`` end to end: the example orders run to completion on a Kinesis stream in a moto server
that the command starts itself (no endpoint configured), through Lambda-shaped events.

Every order's payment step fails once (the example gateway times out on a charge's first
request), so each machine retries once: through a DynamoDB retry table moved by the scheduled
timer in one configuration, through an SQS retry queue delivered by its SQS trigger in the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ORDERS = ROOT / "examples" / "orders" / "fsm.yaml"
ARN = "arn:aws:{service}:us-east-1:123456789012:{resource}"
COUNT = 3

RETRY_SOURCES = {
    "dynamodb-retry-table": ARN.format(service="dynamodb", resource="table/fsmlog-dev-retries"),
    "sqs-retry-queue": ARN.format(service="sqs", resource="fsmlog-dev-retries"),
}


def _settings(tmp_path: Path, retry_source: str) -> Path:
    values = {
        "PRIMARY_STREAM_SOURCE": ARN.format(service="kinesis", resource="stream/fsmlog-dev"),
        "PRIMARY_CHECKPOINT_SOURCE": ARN.format(service="dynamodb", resource="table/fsmlog-dev-checkpoints"),
        "PRIMARY_CACHE_SOURCE": ARN.format(service="dynamodb", resource="table/fsmlog-dev-cache"),
        "PRIMARY_DEAD_LETTER_SOURCE": ARN.format(service="dynamodb", resource="table/fsmlog-dev-dead-letters"),
        "PRIMARY_RETRY_SOURCE": retry_source,
        "RETRY_BASE_SECONDS": 0.2,
        "RETRY_CAP_SECONDS": 1.0,
        "LEASE_WAIT_SECONDS": 5.0,
    }
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(values))
    return path


@pytest.mark.parametrize("config", sorted(RETRY_SOURCES))
def test_orders_run_to_completion_through_fsmlog_dev(tmp_path, config):
    settings = _settings(tmp_path, RETRY_SOURCES[config])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSMLOG_"))}
    env.update(PYTHONPATH=str(ROOT), ORDERS_GATEWAY_DB=str(tmp_path / "gateway.db"), AWS_DEFAULT_REGION="us-east-1")
    proc = subprocess.run(
        [sys.executable, "-m", "fsmlog.cli", "--settings", str(settings), "dev", str(ORDERS),
         "--start", "order", "--count", str(COUNT), "--until-done", "--timeout", "120", "--timer", "0.5", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert report["finished"] is True
    assert [m["status"] for m in report["machines"]] == ["completed"] * COUNT
    assert {m["state"] for m in report["machines"]} == {"done"}
    stats = report["stats"]
    assert stats["errors"] == 0 and stats["failed_items"] == 0
    if config == "sqs-retry-queue":
        assert stats["retry_messages"] == COUNT  # each charge retried once, delivered as an SQS event
        assert stats["timer_runs"] == 0
    else:
        assert stats["requeued"] == COUNT  # each charge retried once, moved into the log by the timer
    assert "local AWS: created " + json.loads(settings.read_text())["PRIMARY_STREAM_SOURCE"] in proc.stderr
