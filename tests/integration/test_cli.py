"""The ``fsmlog`` command line end to end, as subprocesses on an embedded file in a temp dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ORDERS = ROOT / "examples" / "orders" / "fsm.yaml"
DOCUMENTS = ROOT / "examples" / "documents" / "fsm.yaml"


@pytest.fixture
def fsmlog(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSMLOG_") and not k.endswith("_SOURCE")}
    env.update(PYTHONPATH=str(ROOT), ORDERS_GATEWAY_DB=str(tmp_path / "gateway.db"), COLUMNS="200")
    db = str(tmp_path / "cli.db")

    def run(*args: str, db_path: str | None = db, **more_env: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "fsmlog.cli"] + (["--db", db_path] if db_path else []) + list(args)
        return subprocess.run(argv, cwd=tmp_path, env={**env, **more_env}, capture_output=True, text=True,
                              timeout=180)

    return run


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_run_shows_each_transition_including_the_retry(fsmlog, tmp_path):
    import sqlite3

    proc = fsmlog("run", str(ORDERS), "--machine", "order", "--count", "3")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "started 3 'order' machine(s)" in out
    # every charge's first try times out at the gateway and its second goes through: exactly two tries
    with sqlite3.connect(tmp_path / "gateway.db") as gw:
        tries = dict(gw.execute("SELECT a.key, a.n FROM attempts a JOIN charges c ON c.key = a.key"))
    assert len(tries) == 3 and set(tries.values()) == {2}
    # each timeout that came back as a failure is shown, naming the action that raised, with its retry
    # (under load a worker may lose its lease right after the timeout: that try is redelivered, not retried)
    shown = out.count("order_actions.ChargePayment failed: timed out on purpose")
    assert 1 <= shown == out.count("PaymentGatewayTimeout") == out.count("[attempt 2]")
    assert shown == out.count("will retry (attempt 2)")
    assert out.count("notifying --notified--> done") == 3
    assert "completed: 3" in out


def test_run_json_prints_one_document(fsmlog):
    proc = fsmlog("run", str(ORDERS), "--machine", "order", "--count", "2", "--json",
                  "--context", '{"sku": "book-42", "quantity": 2, "amount": "39.90", "customer": "ada@example.com"}')
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["counts"] == {"completed": 2}
    assert [m["state"] for m in doc["machines"]] == ["done", "done"]
    for machine in doc["machines"]:  # each final context, as `status ID --json` has it
        status = json.loads(fsmlog("status", machine["correlation_id"], "--json").stdout)
        assert machine["context"] == status["context"] and machine["context"]["charge_id"].startswith("ch_")


def test_run_exits_1_when_a_machine_ends_badly(fsmlog, tmp_path):
    (tmp_path / "boom.py").write_text("def explode(context, obj):\n    raise ValueError('no way')\n")
    (tmp_path / "boom.yaml").write_text(
        "machines:\n- name: boom\n  max_retries: 0\n  states:\n  - name: a\n    initial: true\n"
        "    do_action: boom.explode\n    transitions:\n    - {event: ok, target: b}\n  - name: b\n    final: true\n")
    proc = fsmlog("run", "boom.yaml", "--machine", "boom", "--json")
    assert proc.returncode == 1
    (machine,) = json.loads(proc.stdout)["machines"]
    assert machine["status"] == "failed" and "ValueError" in machine["error"]


def test_start_worker_once_status_history(fsmlog):
    proc = fsmlog("start", str(DOCUMENTS), "--machine", "document", "--context",
                  json.dumps({"text": "# Plan\n\nWe ship the worker first. Then the command line follows it."}))
    assert proc.returncode == 0, proc.stderr
    cid = proc.stdout.strip()
    assert len(cid) == 32

    status = json.loads(fsmlog("status", cid, "--json").stdout)
    assert status["machine"]["status"] == "running" and status["machine"]["state"] == "uploaded"

    proc = fsmlog("worker", str(DOCUMENTS), "--once")
    assert proc.returncode == 0, proc.stderr
    assert "steps run       3: 2 moved on, 1 completed, 0 failed and will retry" in proc.stdout

    status = json.loads(fsmlog("status", cid, "--json").stdout)
    assert status["machine"]["status"] == "completed" and status["machine"]["state"] == "published"
    assert status["context"]["published"]["slug"] == "plan"

    history = json.loads(fsmlog("history", cid, "--json").stdout)
    assert [h["record"]["kind"] for h in history] == ["start", "step", "step", "completed"]
    assert history[0]["folded"]["status"] == "running" and history[-1]["folded"]["status"] == "completed"

    table = fsmlog("status")  # ids short in tables, whole with --wide
    assert table.returncode == 0 and cid[:8] in table.stdout and cid not in table.stdout
    assert "completed: 1" in table.stdout
    assert cid in fsmlog("status", "--wide").stdout
    assert "published" in fsmlog("history", cid).stdout
    assert "published" in fsmlog("history", cid[:8]).stdout  # the short id a table shows is taken


def test_worker_once_says_when_the_next_retry_is_due(fsmlog):
    assert fsmlog("start", str(ORDERS), "--machine", "order").returncode == 0
    slow_retries = {"RETRY_BASE_SECONDS": "30", "RETRY_CAP_SECONDS": "60"}
    proc = fsmlog("worker", str(ORDERS), "--once", **slow_retries)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "worker summary:"
    assert "1 failed and will retry" in proc.stdout
    assert lines[-2].startswith("1 retry waiting, next due in ")
    assert lines[-1] == "run this command again then, or without --once to keep going"
    assert max(len(line) for line in lines) <= 80
    due_in = float(lines[-2].split("next due in ")[1].split("s ")[0])
    assert 0 <= due_in <= 60


def cells_whole_within_80_columns(proc: subprocess.CompletedProcess, *cells: str) -> list[str]:
    """The output's lines: none longer than 80, and each cell found whole on one line (not folded)."""
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, proc.stdout
    words = {w for line in lines for w in line.split()}
    missing = [cell for cell in cells if cell not in words]
    assert not missing, (missing, proc.stdout)
    return lines


def test_tables_fit_80_columns_with_short_ids_and_every_command_takes_a_prefix(fsmlog, tmp_path):
    run = fsmlog("run", str(ORDERS), "--machine", "order", "--count", "3", "--json")
    ids = [m["correlation_id"] for m in json.loads(run.stdout)["machines"]]
    narrow = {"COLUMNS": "80"}

    lines = cells_whole_within_80_columns(fsmlog("status", **narrow), *(cid[:8] for cid in ids), "completed",
                                          "done", "order")
    assert not any(cid in line for line in lines for cid in ids)
    assert any(cid in fsmlog("status", "--wide", **narrow).stdout for cid in ids)  # whole ids on asking

    short = ids[0][:8]
    cells_whole_within_80_columns(fsmlog("history", short, **narrow), "start", "retry", "completed", "reserving",
                                  "reserved", "PaymentGatewayTimeout:", "order_actions.ChargePayment")
    cells_whole_within_80_columns(fsmlog("status", short, **narrow), short, "completed", "done")
    assert json.loads(fsmlog("status", short, "--json").stdout)["machine"]["correlation_id"] == ids[0]

    # ids chosen by hand: an exact id wins, a shared prefix is one line listing the candidates
    for cid in ("order-1", "order-2", "order-10"):
        assert fsmlog("start", str(ORDERS), "--machine", "order", "--id", cid).returncode == 0
    ambiguous = fsmlog("abort", "order-")
    assert ambiguous.returncode == 1
    assert one_error_line(ambiguous).endswith("3 ids start with it (order-1, order-10, order-2); give more "
                                              "characters")
    assert fsmlog("abort", "order-1").stdout.startswith("aborted order-1 (order)")
    assert fsmlog("abort", "order-2").returncode == 0
    assert fsmlog("abort", "order-1").returncode == 1  # the exact one, already ended: not order-10
    assert "no machine with id 'nobody' (or an id starting with it)" in one_error_line(fsmlog("history", "nobody"))
    graph = fsmlog("graph", str(ORDERS), "--id", "order-10", "--format", "mermaid")
    assert graph.returncode == 0 and "class received current" in graph.stdout

    # dead letters: short ids in the list, a prefix taken by show and redrive
    (tmp_path / "other.yaml").write_text(
        "machines:\n- name: stray\n  states:\n  - name: a\n    initial: true\n    final: true\n")
    assert fsmlog("start", "other.yaml", "--machine", "stray").returncode == 0
    assert fsmlog("worker", str(ORDERS), "--once").returncode == 0
    (letter,) = json.loads(fsmlog("dead-letters", "list", "--json").stdout)
    cells_whole_within_80_columns(fsmlog("dead-letters", "list", **narrow), letter["id"][:8])
    shown = json.loads(fsmlog("dead-letters", "show", letter["id"][:8], "--json").stdout)
    assert shown["id"] == letter["id"]
    assert fsmlog("dead-letters", "redrive", letter["id"][:8]).returncode == 0


def test_validate_reports_every_problem_one_line_each(fsmlog, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("machines:\n- name: m\n  states:\n  - name: a\n    initial: true\n"
                   "    transitions:\n    - {event: go, target: nowhere}\n  - name: b\n    final: true\n"
                   "- name: n\n  max_retries: -1\n  states:\n  - name: lonely\n    initial: true\n"
                   "    final: true\n")
    proc = fsmlog("validate", str(bad), db_path=None)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) >= 2 and all(line.startswith("error: ") for line in lines)
    assert any("nowhere" in line for line in lines) and any("max_retries" in line for line in lines)

    ok = fsmlog("validate", str(ORDERS), db_path=None)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 1 machines")


def test_errors_are_one_clear_line(fsmlog, tmp_path):
    line = one_error_line(fsmlog("run", str(ORDERS), "--machine", "nope"))
    assert "unknown machine 'nope'" in line and "'order'" in line

    missing = fsmlog("run", str(tmp_path / "missing.yaml"), "--machine", "order")
    assert missing.returncode == 1 and "not found" in one_error_line(missing)

    usage = fsmlog("run", str(ORDERS), "--machine", "order", "--context", "{not json")
    assert usage.returncode == 2 and "--context is not valid JSON" in one_error_line(usage)
    bad_option = fsmlog("run", str(ORDERS), "--machine", "order", "--count", "many")
    assert bad_option.returncode == 2  # argparse's own errors: one line too, no usage lines
    assert one_error_line(bad_option) == ("error: fsmlog run: argument --count: invalid int value: 'many'; "
                                          "`fsmlog run -h` shows the options")
    dev = fsmlog("dev", str(ORDERS), "--start", "order", "--context", "[1]")
    assert dev.returncode == 2 and "like '{\"amount\": 10}', got list" in one_error_line(dev)
    no_action = fsmlog("dead-letters")
    assert no_action.returncode == 2 and "list, show ID or redrive" in one_error_line(no_action)

    assert "no machine with id 'ghost'" in one_error_line(fsmlog("status", "ghost"))

    debug = fsmlog("--debug", "status", "ghost")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_graph_dot_mermaid_and_highlight(fsmlog):
    dot = fsmlog("graph", str(ORDERS), db_path=None)
    assert dot.returncode == 0 and dot.stdout.startswith('digraph "order"')
    assert '"charging" -> "rejected" [label="declined / ReleaseStock"]' in dot.stdout
    assert '"received" -> "reserving" [label="valid", style=dashed]' in dot.stdout  # local transition

    mermaid = fsmlog("graph", str(DOCUMENTS), "--format", "mermaid", db_path=None)
    assert mermaid.stdout.startswith("stateDiagram-v2")
    assert "revising --> reviewing : revised" in mermaid.stdout

    cid = fsmlog("start", str(ORDERS), "--machine", "order").stdout.strip()
    highlighted = fsmlog("graph", str(ORDERS), "--id", cid, "--format", "mermaid")
    assert highlighted.returncode == 0, highlighted.stderr
    assert "class received current" in highlighted.stdout


def test_abort(fsmlog):
    cid = fsmlog("start", str(ORDERS), "--machine", "order").stdout.strip()
    proc = fsmlog("abort", cid, "--reason", "customer cancelled")
    assert proc.returncode == 0, proc.stderr
    assert f"aborted {cid}" in proc.stdout
    status = json.loads(fsmlog("status", cid, "--json").stdout)["machine"]
    assert status["status"] == "aborted" and status["error"] == "Aborted: customer cancelled"
    # a worker coming by afterwards runs nothing of it
    assert fsmlog("worker", str(ORDERS), "--once").returncode == 0
    assert json.loads(fsmlog("status", cid, "--json").stdout)["machine"]["status"] == "aborted"
    assert "already ended" in one_error_line(fsmlog("abort", cid))


def test_dead_letters_show_says_why_bytes_are_not_a_record(fsmlog, tmp_path):
    from handlers.deadletters.sqlite import SqliteDeadLetters

    store = SqliteDeadLetters(f"sqlite:///{tmp_path / 'cli.db'}")
    try:
        letter_id = store.park("undecodable", "sqlite:x.db", "42", b"\x00\x01garbage", 1_700_000_000.0)
    finally:
        store.close()
    shown = fsmlog("dead-letters", "show", letter_id[:8])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    decoded = lines[lines.index("decoded") + 1:]
    assert len(decoded) == 1  # one line, the codec's reason once (its msgpack detail varies by version)
    assert decoded[0].startswith("  cannot be decoded: not an fsmlog record (msgpack: ")
    assert decoded[0].endswith("); first bytes: 000167617262616765 (9 bytes)")
