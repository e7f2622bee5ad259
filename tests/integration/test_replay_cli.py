"""``fsmlog replay`` end to end, as subprocesses on an embedded file in a temp dir.

The log holds two machines that ran to the end, two that stalled an hour or
two ago (their records were consumed, nothing followed: a worker that died,
a retry that was lost) and one that is running but recent. The records of the
stalled ones are appended directly with old times; the consumer offset is moved
past them, as the dead worker's claim would have been.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventlog.codec import decode, encode
from eventlog.event import RETRY, START, STEP, Event
from eventlog.log import OutRecord
from eventlog.settings import SOURCES, load_settings

ROOT = Path(__file__).resolve().parents[2]

ACTIONS = "replay_cli_noop"
FSM = f"""\
machines:
- name: tiny
  max_retries: 2
  states:
  - name: a
    initial: true
    do_action: {ACTIONS}.go
    transitions:
    - event: next
      target: b
  - name: b
    do_action: {ACTIONS}.go
    transitions:
    - event: next
      target: c
  - name: c
    final: true
"""

DONE = ("done-1", "done-2")
STALLED = ("stall-1", "stall-2")
FRESH = "fresh-1"
ARN = "arn:aws:kinesis:eu-west-1:123456789012:stream/orders"


@pytest.fixture
def fsmlog(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSMLOG_") and not k.endswith("_SOURCE")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200")
    db = str(tmp_path / "x.db")

    def run(*args: str, db_path: str | None = db) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "fsmlog.cli"] + (["--db", db_path] if db_path else []) + list(args)
        return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)

    return run


@pytest.fixture
def workflow(tmp_path, monkeypatch):
    """fsm.yaml + no-op actions in tmp, and a log with completed, stalled and fresh machines in x.db."""
    from handlers.engine import Engine
    from handlers.wiring import open_services
    from handlers.worker import Worker
    from projections.definition import load

    (tmp_path / f"{ACTIONS}.py").write_text("def go(context, obj):\n    return 'next'\n")
    fsm = tmp_path / "fsm.yaml"
    fsm.write_text(FSM)
    monkeypatch.syspath_prepend(str(tmp_path))
    defs = load(fsm)
    dhash = defs.machine("tiny").hash

    url = f"sqlite:///{tmp_path.resolve() / 'x.db'}"
    settings = load_settings(environ={}, **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES})
    services = open_services(settings)
    try:
        engine = Engine(defs, services, settings)
        for cid in DONE:
            engine.start("tiny", {}, cid)
        Worker(engine, services.log).run_until_drained()

        now = time.time()
        records = [
            Event.create(START, "stall-1", "tiny", dhash, 0, 0, "a", None, now - 7200, {"n": 1}),
            Event.create(START, "stall-2", "tiny", dhash, 0, 0, "a", None, now - 7300, {"n": 2}),
            Event.create(STEP, "stall-2", "tiny", dhash, 1, 0, "a", "next", now - 3600, {"n": 2}),
            Event.create(START, FRESH, "tiny", dhash, 0, 0, "a", None, now, {"n": 3}),
        ]
        services.log.append([OutRecord(e.correlation_id, encode(e)) for e in records])
        services.log.commit("fsmlog-worker", services.log.head())  # consumed; nothing followed
    finally:
        services.close()
    return fsm


def log_records(tmp_path: Path) -> list[Event]:
    with sqlite3.connect(tmp_path / "x.db") as conn:
        return [decode(bytes(d)) for (d,) in conn.execute("SELECT data FROM log ORDER BY position")]


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def scan_json(fsmlog, *args: str) -> dict:
    proc = fsmlog("replay", "scan", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_scan_lists_exactly_the_stalled_machines_and_redispatch_completes_them(fsmlog, workflow, tmp_path):
    doc = scan_json(fsmlog, "--stalled-after", "15m")
    assert {row["correlation_id"] for row in doc["stalled"]} == set(STALLED)
    by_id = {row["correlation_id"]: row for row in doc["stalled"]}
    assert (by_id["stall-2"]["state"], by_id["stall-2"]["last_event"], by_id["stall-2"]["steps"]) == ("a", "next", 1)
    assert by_id["stall-1"]["last_kind"] == "start" and by_id["stall-1"]["stuck_for"].startswith("2h")
    assert doc["stalled"][0]["correlation_id"] == "stall-1"  # longest stuck first
    (summary,) = doc["summary"]
    assert (summary["machine"], summary["completed"], summary["running"], summary["stalled"]) == ("tiny", 2, 3, 2)
    assert doc["records"] == len(log_records(tmp_path)) and "redispatched" not in doc

    # a threshold above the oldest stall finds nothing; --fail-on-stalled turns a finding into exit 3
    assert scan_json(fsmlog, "--stalled-after", "3h")["stalled"] == []
    assert fsmlog("replay", "scan", "--fail-on-stalled", "--json").returncode == 3

    before = len(log_records(tmp_path))
    doc = scan_json(fsmlog, "--redispatch")
    assert {r["correlation_id"]: (r["result"], r["retries"]) for r in doc["redispatched"]} == {
        "stall-1": ("redispatched", 1), "stall-2": ("redispatched", 1)}
    appended = log_records(tmp_path)[before:]
    assert sorted((e.correlation_id, e.kind, e.steps, e.retries) for e in appended) == [
        ("stall-1", RETRY, 0, 1), ("stall-2", RETRY, 1, 1)]

    worker = fsmlog("worker", str(workflow), "--once")
    assert worker.returncode == 0, worker.stderr
    doc = scan_json(fsmlog)
    assert doc["stalled"] == []
    for cid in (*DONE, *STALLED):
        status = json.loads(fsmlog("status", cid, "--json").stdout)["machine"]
        assert (status["status"], status["state"]) == ("completed", "c"), cid
    assert fsmlog("replay", "scan", "--fail-on-stalled").returncode == 0


def test_scan_table_dry_run_and_snapshot_refresh(fsmlog, workflow, tmp_path):
    before = len(log_records(tmp_path))
    proc = fsmlog("replay", "scan", "--stalled-after", "30m")
    assert proc.returncode == 0, proc.stderr
    assert "2 stalled machine(s)" in proc.stdout
    for cid in STALLED:
        assert cid in proc.stdout
    assert FRESH not in proc.stdout  # running, but not stalled: only the summary counts it
    assert "dry run: nothing was written" in proc.stdout and "--redispatch" in proc.stdout
    assert "records" in proc.stderr  # the progress counter goes to stderr
    assert len(log_records(tmp_path)) == before

    # the stalled and the fresh machine have no snapshot yet; the ended ones got theirs from the engine
    doc = scan_json(fsmlog, "--refresh-snapshots-older-than", "1h")
    assert doc["snapshots"] == {"written": 3, "up_to_date": 2, "without_position": 0}
    assert scan_json(fsmlog, "--refresh-snapshots-older-than", "1h")["snapshots"]["written"] == 0

    # a rebuild now starts at the fresh snapshot and folds nothing after it
    rebuilt = json.loads(fsmlog("replay", "machine", "stall-2", "--json").stdout)["machine"]
    assert rebuilt["tail_records"] == 0 and rebuilt["snapshot"]["steps"] == 1

    usage = fsmlog("replay", "scan", "--stalled-after", "soon")
    assert usage.returncode == 2 and "--stalled-after" in usage.stderr and "Traceback" not in usage.stderr


def test_machine_dry_run_writes_nothing_and_redispatch_appends_one_retry(fsmlog, workflow, tmp_path):
    before = log_records(tmp_path)
    proc = fsmlog("replay", "machine", "stall-2")
    assert proc.returncode == 0, proc.stderr
    assert "field" in proc.stdout and "snapshot" in proc.stdout and "rebuilt" in proc.stdout
    assert "no snapshot: folded 2 record(s)" in proc.stdout
    assert "dry run: nothing was written" in proc.stdout
    assert "fsmlog replay machine stall-2 --redispatch" in proc.stdout
    assert log_records(tmp_path) == before

    doc = json.loads(fsmlog("replay", "machine", "stall-2", "--json").stdout)
    assert doc["written"] is False and doc["redispatched"] is None
    assert (doc["would_append"]["kind"], doc["would_append"]["retries"]) == (RETRY, 1)
    assert (doc["machine"]["state"], doc["machine"]["event"], doc["machine"]["tail_records"]) == ("a", "next", 2)
    assert log_records(tmp_path) == before

    proc = fsmlog("replay", "machine", "stall-2", "--redispatch", "--fsm", str(workflow))
    assert proc.returncode == 0, proc.stderr
    assert "redispatched" in proc.stdout and "retries 0 -> 1" in proc.stdout
    after = log_records(tmp_path)
    assert after[:len(before)] == before and len(after) == len(before) + 1
    last = after[-1]
    assert (last.correlation_id, last.kind, last.steps, last.retries, last.state, last.event) == (
        "stall-2", RETRY, 1, 1, "a", "next")
    assert last.context == {"n": 2}

    ended = fsmlog("replay", "machine", "done-1", "--redispatch")
    assert ended.returncode == 0, ended.stderr
    assert "machine has ended" in ended.stdout and "nothing was written" in ended.stdout
    assert len(log_records(tmp_path)) == len(after)


def test_unknown_id_is_one_line_exit_1(fsmlog, workflow):
    proc = fsmlog("replay", "machine", "ghost")
    assert proc.returncode == 1
    assert "no machine with id 'ghost' (or an id starting with it)" in one_error_line(proc)
    assert proc.stdout == ""


def test_replay_machine_takes_a_unique_prefix_and_refuses_an_ambiguous_one(fsmlog, workflow):
    cid = fsmlog("start", str(workflow), "--machine", "tiny").stdout.strip()
    proc = fsmlog("replay", "machine", cid[:8], "--json")  # the short id a table shows
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["machine"]["correlation_id"] == cid
    ambiguous = fsmlog("replay", "machine", "stall-")
    assert ambiguous.returncode == 1
    assert "2 ids start with it (stall-1, stall-2)" in one_error_line(ambiguous)


def test_scan_reads_the_kcl_projection_file(fsmlog, tmp_path):
    from projections.state import MachineState
    from replay.scan import ProjectionFile

    now = time.time()
    pf = ProjectionFile(tmp_path / "projections.db")
    try:
        pf.merge({
            "p-old": MachineState(Event.create(STEP, "p-old", "tiny", "h", 1, 0, "a", "next", now - 5000, {})),
            "p-new": MachineState(Event.create(START, "p-new", "tiny", "h", 0, 0, "a", None, now, {})),
        }, shard_id="shardId-000000000000", sequence="42", records=2)
    finally:
        pf.close()
    doc = scan_json(fsmlog, "--projections", "projections.db")
    assert doc["source"] == "projections" and doc["records"] == 2
    assert [row["correlation_id"] for row in doc["stalled"]] == ["p-old"]

    missing = fsmlog("replay", "scan", "--projections", "nope.db")
    assert missing.returncode == 1 and "no projection file" in one_error_line(missing)
    assert not (tmp_path / "nope.db").exists()


def test_kcl_properties_refuses_a_stream_that_is_not_kinesis(fsmlog, tmp_path):
    proc = fsmlog("replay", "kcl-properties")
    assert proc.returncode == 1
    assert "PRIMARY_STREAM_SOURCE" in one_error_line(proc)
    assert not (tmp_path / "fsmlog-replay.properties").exists()


def test_kcl_properties_writes_the_file_and_prints_the_java_command(fsmlog, tmp_path):
    pytest.importorskip("amazon_kclpy")
    (tmp_path / "settings.yaml").write_text(f"PRIMARY_STREAM_SOURCE: {ARN}\n")
    proc = fsmlog("--settings", "settings.yaml", "replay", "kcl-properties", "--out", "kcl/replay.properties",
                  "--application", "orders-replay", "--state", "state/projections.db", db_path=None)
    assert proc.returncode == 0, proc.stderr
    props = tmp_path / "kcl" / "replay.properties"
    lines = set(props.read_text().splitlines())
    assert {"streamName = orders", "regionName = eu-west-1", "applicationName = orders-replay"} <= lines
    assert any(line.startswith("executableName = ") and line.endswith(
        f"-m replay.kcl_processor --state {tmp_path.resolve() / 'state' / 'projections.db'}") for line in lines)
    (command,) = [line for line in proc.stdout.splitlines() if line.startswith("java ")]
    assert "software.amazon.kinesis.multilang.MultiLangDaemon" in command
    assert command.endswith(f"--properties-file {props.resolve()}")
    assert "fsmlog replay scan --projections" in proc.stdout
