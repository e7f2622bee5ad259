"""``fsmlog test`` and ``fsmlog replay check`` end to end, as subprocesses in a temp dir."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLANTED = ROOT / "tests" / "unit" / "planted"
SCHEMA = PLANTED / "context.schema.json"
ORDERS = ROOT / "examples" / "orders"


@pytest.fixture
def fsmlog(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSMLOG_") and not k.endswith("_SOURCE")}
    env.pop("ORDERS_GATEWAY_DB", None)
    env.update(PYTHONPATH=str(ROOT), COLUMNS="80")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fsmlog.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    return run


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_a_planted_bug_is_reported_with_its_property_shrunk_case_and_a_log_history_shows(fsmlog):
    proc = fsmlog("test", str(PLANTED / "broken.yaml"), "--machine", "triage", "--context-schema", str(SCHEMA),
                  "--examples", "30", "--seed", "7", "--max-steps", "50")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), proc.stdout
    assert "triage: FAILED P1 - " in proc.stdout and "faults injected:" in proc.stdout
    assert "P1 failed: machine 'triage', state 'triaging', event 'large'" in lines
    assert '  context #0: {"amount": 101, "n": 0}' in lines and "  faults: none" in lines
    shown = " ".join(proc.stdout[proc.stdout.index("log: fsmlog "):].split())  # the command, unwrapped
    argv = shlex.split(re.match(r"log: fsmlog (history --db \S+ \w+)", shown).group(1))
    history = fsmlog(*argv)
    assert history.returncode == 0, history.stderr
    assert "NoTransition" in history.stdout and "large" in history.stdout


def test_the_fixed_machines_pass_and_json_is_one_document(fsmlog):
    proc = fsmlog("test", str(PLANTED / "fixed.yaml"), "--context-schema", str(SCHEMA), "--examples", "20",
                  "--seed", "7", "--max-steps", "50", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] and doc["seed"] == 7
    assert [m["machine"] for m in doc["machines"]] == ["triage", "remember", "countdown", "wallet", "tagger"]
    assert [(m["ok"], m["examples"], m["runs"]) for m in doc["machines"]] == [(True, 20, 40)] * 5
    assert all(sum(m["faults_injected"].values()) > 0 for m in doc["machines"])


def test_the_order_example_holds_every_property(fsmlog):
    proc = fsmlog("test", str(ORDERS / "fsm.yaml"), "--context-schema", str(ORDERS / "context.schema.json"),
                  "--examples", "20", "--seed", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "order: ok - " in proc.stdout and "every property held (P1-P6)" in proc.stdout
    assert all(len(line) <= 80 for line in proc.stdout.splitlines())


def test_a_broken_schema_or_an_action_that_cannot_import_is_one_line_and_exit_2(fsmlog, tmp_path):
    schema = tmp_path / "bad.json"
    schema.write_text('{"type": "object", "properties": {"amount": {"type": "integr"}}}')
    proc = fsmlog("test", str(PLANTED / "fixed.yaml"), "--context-schema", str(schema))
    assert proc.returncode == 2
    assert "not a valid JSON Schema at properties/amount/type" in one_error_line(proc)
    fsm = tmp_path / "fsm.yaml"
    fsm.write_text("machines:\n- name: m\n  states:\n  - name: a\n    initial: true\n    final: true\n"
                   "    entry_action: no_such_module.Act\n")
    proc = fsmlog("test", str(fsm))
    assert proc.returncode == 2
    assert "no_such_module" in one_error_line(proc)
    proc = fsmlog("test", str(PLANTED / "fixed.yaml"), "--max-steps", "0")
    assert proc.returncode == 2 and one_error_line(proc) == "error: --max-steps 0 is below 1; give 1 or more"


def test_replay_check_parks_machines_whose_state_is_gone_and_passes_compatible_definitions(fsmlog, tmp_path):
    shutil.copy(ORDERS / "order_actions.py", tmp_path)
    shutil.copy(ORDERS / "fsm.yaml", tmp_path / "fsm.yaml")
    for _ in range(2):  # started, never run: their next record is the start in state 'received'
        assert fsmlog("--db", "c.db", "start", "fsm.yaml", "--machine", "order").returncode == 0
    text = (tmp_path / "fsm.yaml").read_text()
    (tmp_path / "retries.yaml").write_text(text.replace("max_retries: 3", "max_retries: 4"))
    (tmp_path / "renamed.yaml").write_text(text.replace("name: received", "name: accepted"))

    same = fsmlog("--db", "c.db", "replay", "check", "fsm.yaml")
    assert same.returncode == 0 and "none would be parked" in same.stdout
    upgraded = fsmlog("--db", "c.db", "replay", "check", "retries.yaml", "--json")
    assert upgraded.returncode == 0
    assert json.loads(upgraded.stdout)["outcomes"] == {"handled": 0, "upgraded": 2, "parked": 0}
    parked = fsmlog("--db", "c.db", "replay", "check", "renamed.yaml")
    assert parked.returncode == 1
    assert "would be parked (2)" in parked.stdout and "state 'received' is gone" in parked.stdout
    assert all(len(line) <= 80 for line in parked.stdout.splitlines())
    doc = json.loads(fsmlog("--db", "c.db", "replay", "check", "renamed.yaml", "--json").stdout)
    assert [v["reason"] for v in doc["parked"]] == ["state 'received' is gone"] * 2
