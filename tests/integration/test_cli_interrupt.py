"""Ctrl-C (SIGINT) to ``fsmlog run`` and ``fsmlog worker``: what is left, and how to go on, in a few lines."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

SLOW_ACTIONS = '''
import time


def tick(context, obj):
    time.sleep(0.1)
    context["n"] = context.get("n", 0) + 1
    return "again" if context["n"] < 30 else "done"
'''

SLOW_FSM = """
machines:
- name: slow
  states:
  - name: ticking
    initial: true
    do_action: slow_actions.tick
    transitions:
    - {event: again, target: ticking}
    - {event: done, target: finished}
  - name: finished
    final: true
"""


@pytest.fixture
def slow(tmp_path):
    (tmp_path / "slow_actions.py").write_text(SLOW_ACTIONS)
    (tmp_path / "slow.yaml").write_text(SLOW_FSM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSMLOG_") and not k.endswith("_SOURCE")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200", PYTHONUNBUFFERED="1")
    return tmp_path, env


def fsmlog_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "fsmlog.cli", *args]


def interrupt_after(proc: subprocess.Popen, marker: str, lines: list[str]) -> None:
    """Read stdout until ``marker`` appeared, then send SIGINT once, as Ctrl-C does."""
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            break
        assert time.monotonic() < deadline, "".join(lines)
    proc.send_signal(signal.SIGINT)


def test_ctrl_c_during_run_says_what_is_left_and_how_to_continue(slow):
    where, env = slow
    proc = subprocess.Popen(fsmlog_argv("--db", "s.db", "run", "slow.yaml", "--machine", "slow", "--count", "3"),
                            cwd=where, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    interrupt_after(proc, "ticking --again--> ticking", lines)
    rest, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "timed out" not in stderr and "Traceback" not in stderr
    (error,) = [line for line in stderr.splitlines() if line.strip()]
    assert error.startswith("error: interrupted: 3 of 3 machine(s) still running")
    command = error.split("continue them with `", 1)[1].split("`", 1)[0]
    assert command == "fsmlog --db s.db worker slow.yaml --once"
    assert "running: 3" in rest  # the counts as they were when it stopped

    # the command it names goes on with them: run as given (the installed `fsmlog` is this interpreter's)
    cont = subprocess.run(fsmlog_argv(*shlex.split(command)[1:]), cwd=where, env=env, capture_output=True,
                          text=True, timeout=120)
    assert cont.returncode == 0, cont.stderr
    doc = json.loads(subprocess.run(fsmlog_argv("--db", "s.db", "status", "--json"), cwd=where, env=env,
                                    capture_output=True, text=True, timeout=60).stdout)
    assert doc["counts"] == {"completed": 3}


def test_ctrl_c_stops_the_worker_with_its_summary_on_lines_of_their_own(slow):
    where, env = slow
    start = subprocess.run(fsmlog_argv("--db", "s.db", "start", "slow.yaml", "--machine", "slow"), cwd=where,
                           env=env, capture_output=True, text=True, timeout=60)
    assert start.returncode == 0, start.stderr
    proc = subprocess.Popen(fsmlog_argv("--db", "s.db", "worker", "slow.yaml"), cwd=where, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:  # the worker prints nothing on stdout; wait until it moved the machine
        doc = json.loads(subprocess.run(fsmlog_argv("--db", "s.db", "status", "--json"), cwd=where, env=env,
                                        capture_output=True, text=True, timeout=60).stdout)
        if doc["machines"][0]["steps"] >= 2:
            break
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    lines = stderr.splitlines()
    assert "stopped" in lines  # on a line of its own, not run into the live counter
    summary = lines[lines.index("worker summary:"):]
    labels = [line.split()[0] for line in summary[1:]]
    assert labels == ["records", "steps", "nothing", "parked", "handed", "retries"]
    steps = next(line for line in summary if line.startswith("  steps run"))
    assert int(steps.split()[2].rstrip(":")) >= 2 and "moved on" in steps
