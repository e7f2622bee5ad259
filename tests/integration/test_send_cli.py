"""``fsmlog send`` and ``fsmlog status`` on the approval example, as subprocesses on an embedded file:
the wait shows, an event is sent once, a refused one exits 1 naming state and event."""

from __future__ import annotations

import json
import os
import re
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

    def run(*args: str, **more_env: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "fsmlog.cli", "--db", str(tmp_path / "a.db"), *args]
        return subprocess.run(argv, cwd=tmp_path, env={**env, **more_env}, capture_output=True, text=True,
                              timeout=120)

    return run


def test_send_status_and_refusals(fsmlog):
    assert fsmlog("start", str(QUICK), "--machine", "purchase", "--id", "pr-1",
                  "--context", '{"item": "laptop"}').returncode == 0
    worker = fsmlog("worker", str(QUICK), "--once")
    assert worker.returncode == 0
    assert re.fullmatch(r"1 timer waiting, next due in [0-3]\.\d+s \(\d\d:\d\d:\d\d\):",
                        worker.stdout.splitlines()[-2]), worker.stdout
    status = fsmlog("status", "pr-1")
    row = next(line for line in status.stdout.splitlines() if line.startswith("pr-1 "))
    assert re.fullmatch(r"pr-1\s+purchase\s+waiting until \d\d:\d\d:\d\d\s+requested\s+1\s+0\s+[\d:]{8}\s*",
                        row), row
    assert re.search(r"^waiting until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, then 'remind' from state "
                     r"'requested'$", status.stdout, re.M), status.stdout

    refused = fsmlog("send", "pr-1", "ship", "--fsm", str(QUICK))
    assert (refused.returncode, refused.stderr.splitlines()) == (1, [
        "error: machine 'purchase' (pr-1) in state 'requested' has no transition on event 'ship' "
        "(its events: approve, reject, remind); not sent"])

    sent = fsmlog("send", "pr", "approve", "--data", '{"by": "ana"}', "--event-id", "f-1", "--fsm", str(QUICK))
    assert (sent.returncode, sent.stdout) == (0, "sent 'approve' to pr-1 in state 'requested' (event id f-1)\n")
    again = fsmlog("send", "pr-1", "approve", "--event-id", "f-1", "--fsm", str(QUICK), "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout) == {"correlation_id": "pr-1", "event": "approve", "event_id": "f-1",
                                        "state": "requested", "duplicate": True}

    done = fsmlog("worker", str(QUICK), "--once")
    assert done.stdout.splitlines()[0] == "[pr-1] approved by ana: ordering 'laptop'"
    late = fsmlog("send", "pr-1", "reject", "--fsm", str(QUICK))
    assert (late.returncode, late.stderr.splitlines()) == (1, [
        "error: machine 'purchase' (pr-1) in state 'approved' has ended (completed); event 'reject' not sent"])
    bad = fsmlog("send", "pr-1", "approve", "--data", "{oops", "--fsm", str(QUICK))
    assert bad.returncode == 2 and bad.stderr.splitlines() == [
        "error: --data is not valid JSON (Expecting property name enclosed in double quotes at character 1): "
        "'{oops'; give a JSON value like '{\"by\": \"ana\"}'"]


def test_an_event_sent_before_the_start_ran_is_refused_as_not_waiting_yet(fsmlog):
    assert fsmlog("start", str(QUICK), "--machine", "purchase", "--id", "pr-2").returncode == 0
    early = fsmlog("send", "pr-2", "approve", "--fsm", str(QUICK))
    assert (early.returncode, early.stderr.splitlines()) == (1, [
        "error: machine 'purchase' (pr-2) in state 'requested' has not reached its wait yet: its start record "
        "waits for a worker (`fsmlog worker`); event 'approve' not sent, send it once the start has run"])


def test_a_source_that_cannot_be_reached_exits_3_and_a_refusal_exits_1(fsmlog):
    """A script retries exit status 3 (the source failed: the event was not sent, try again) and never
    a refusal (exit status 1: the machine cannot take the event)."""
    assert fsmlog("start", str(QUICK), "--machine", "purchase", "--id", "pr-1",
                  "--context", '{"item": "laptop"}').returncode == 0
    assert fsmlog("worker", str(QUICK), "--once").returncode == 0  # it waits for the event
    down = fsmlog("send", "pr-1", "approve", "--fsm", str(QUICK),
                  AWS_CHAOS=json.dumps({"sqlite": {"ConnectionError": 1.0}}))
    assert down.returncode == 3, down.stderr
    [line] = down.stderr.splitlines()
    assert line.startswith("error: chaos: injected ConnectionError on sqlite:") and "a.db" in line
    assert fsmlog("send", "pr-1", "ship", "--fsm", str(QUICK)).returncode == 1
    assert fsmlog("send", "pr-1", "approve", "--fsm", str(QUICK)).returncode == 0
