"""``fsmlog send`` and ``fsmlog status`` on the approval example, as subprocesses on an embedded file:
the wait shows, an event is sent once, a refused one exits 1 naming state and event."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "examples" / "approval" / "quick.yaml"

pytestmark = pytest.mark.integration


@pytest.fixture
def fsmlog(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSMLOG_") and not k.endswith("_SOURCE")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200")

    def run(*args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "fsmlog.cli", "--db", str(tmp_path / "a.db"), *args]
        return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    return run


def test_send_status_and_refusals(fsmlog):
    assert fsmlog("start", str(QUICK), "--machine", "purchase", "--id", "pr-1",
                  "--context", '{"item": "laptop"}').returncode == 0
    assert fsmlog("worker", str(QUICK), "--once").returncode == 0
    status = fsmlog("status", "pr-1")
    assert "waiting until " in status.stdout and "then 'remind' from state 'requested'" in status.stdout

    refused = fsmlog("send", "pr-1", "ship", "--fsm", str(QUICK))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "state 'requested' has no transition on event 'ship'" in refused.stderr

    sent = fsmlog("send", "pr", "approve", "--data", '{"by": "ana"}', "--event-id", "f-1", "--fsm", str(QUICK))
    assert sent.returncode == 0 and "sent 'approve' to pr-1 in state 'requested' (event id f-1)" in sent.stdout
    again = fsmlog("send", "pr-1", "approve", "--event-id", "f-1", "--fsm", str(QUICK))
    assert again.returncode == 0 and "applied already" in again.stdout

    done = fsmlog("worker", str(QUICK), "--once")
    assert "approved by ana" in done.stdout
    late = fsmlog("send", "pr-1", "reject", "--fsm", str(QUICK))
    assert late.returncode == 1 and "in state 'approved' has ended" in late.stderr
    bad = fsmlog("send", "pr-1", "approve", "--data", "{oops", "--fsm", str(QUICK))
    assert bad.returncode == 2 and bad.stderr.splitlines() == [
        "error: --data is not valid JSON (Expecting property name enclosed in double quotes at character 1): "
        "'{oops'; give a JSON value like '{\"by\": \"ana\"}'"]
