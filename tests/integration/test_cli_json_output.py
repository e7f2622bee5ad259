"""Every ``--json`` output of the CLI is exactly one JSON document on stdout, with the ``emf:`` metrics
sink configured: the EMF lines (and progress, and logs) go to stderr, so ``fsmlog ... --json | jq`` works.

Subprocesses on an embedded file in a temp dir; only the metrics go to EMF.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventlog.settings import SOURCES

ROOT = Path(__file__).resolve().parents[2]
ORDERS = ROOT / "examples" / "orders" / "fsm.yaml"


@pytest.fixture
def fsmlog(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSMLOG_") and not k.endswith("_SOURCE")}
    url = f"sqlite:///{tmp_path}/cli.db"
    env.update({f"PRIMARY_{kind}_SOURCE": url for kind in SOURCES})
    env.update(PRIMARY_METRICS_SOURCE="emf:", PYTHONPATH=str(ROOT), ORDERS_GATEWAY_DB=str(tmp_path / "gateway.db"),
               COLUMNS="80", RETRY_BASE_SECONDS="0.1", RETRY_CAP_SECONDS="0.2")

    def run(*args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "fsmlog.cli", *args]
        return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)

    return run


def document(proc: subprocess.CompletedProcess, ok: tuple[int, ...] = (0,)):
    """The one JSON document on stdout (json.loads refuses anything before or after it)."""
    assert proc.returncode in ok, proc.stderr
    return json.loads(proc.stdout)


def emf_lines(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in proc.stderr.splitlines() if line.startswith('{"_aws"')]


def test_each_json_command_prints_one_document_and_emf_goes_to_stderr(fsmlog, tmp_path):
    run = fsmlog("run", str(ORDERS), "--machine", "order", "--count", "2", "--json")
    doc = document(run)
    assert doc["counts"] == {"completed": 2}
    emitted = {k for line in emf_lines(run) for k in line}
    assert {"MachinesStarted", "Transitions", "OldestRecordAgeMs"} <= emitted  # the metrics are there, on stderr
    cid = doc["machines"][0]["correlation_id"]

    assert document(fsmlog("status", "--json"))["counts"] == {"completed": 2}
    assert document(fsmlog("status", cid, "--json"))["machine"]["status"] == "completed"
    assert document(fsmlog("history", cid, "--json"))[-1]["record"]["kind"] == "completed"
    assert document(fsmlog("replay", "machine", cid, "--json"))["machine"]["correlation_id"] == cid
    assert document(fsmlog("replay", "scan", "--json"))["machines"] == 2
    check = document(fsmlog("replay", "check", str(ORDERS), "--json"))
    assert (check["running"], check["ended"], check["parked"]) == (0, 2, [])

    # a record no definition knows is parked: the dead-letter listings
    (tmp_path / "other.yaml").write_text(
        "machines:\n- name: stray\n  states:\n  - name: a\n    initial: true\n    final: true\n")
    assert fsmlog("start", "other.yaml", "--machine", "stray").returncode == 0
    assert fsmlog("worker", str(ORDERS), "--once").returncode == 0
    letters = document(fsmlog("dead-letters", "list", "--json"))
    assert len(letters) == 1
    assert document(fsmlog("dead-letters", "show", letters[0]["id"], "--json"))["id"] == letters[0]["id"]
    redrive = fsmlog("dead-letters", "redrive", letters[0]["id"])
    assert redrive.returncode == 0, redrive.stderr
    assert [(x["DeadLettersRedriven"], x["machine"]) for x in emf_lines(redrive)] == [(1, "stray")]

    kit = fsmlog("test", str(ROOT / "examples" / "documents" / "fsm.yaml"), "--examples", "3", "--seed", "1",
                 "--json")
    assert document(kit)["ok"] is True

    dev = fsmlog("dev", str(ORDERS), "--start", "order", "--count", "2", "--until-done", "--timeout", "60",
                 "--timer", "0.2", "--json")
    assert [m["status"] for m in document(dev)["machines"]] == ["completed", "completed"]
    metrics = emf_lines(dev)  # on stderr, like every command's
    assert sum(x["MachinesStarted"] for x in metrics if "MachinesStarted" in x) == 2
    assert {"MachinesStarted", "Transitions"} <= {k for x in metrics for k in x}
