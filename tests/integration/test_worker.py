"""Several local worker processes on one embedded file: claims split the log, leases split the machines.

No servers needed: everything is the embedded SQLite backend in a temp dir.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
from collections import Counter

import pytest

from eventlog.backends.sqlite import SqliteLog
from eventlog.settings import SOURCES, load_settings
from handlers.engine import Engine
from handlers.wiring import open_services
from handlers.worker import Worker, kinesis_record
from projections.definition import from_dict
from projections.fold import fold_records

STEPS = 5
MACHINES = 100
WORKERS = 3

DEFINITION = {
    "machines": [{
        "name": "chain",
        "states": [
            *({"name": f"s{i}", "initial": i == 0, "do_action": f"{__name__}.record_step",
               "transitions": [{"event": "next", "target": f"s{i + 1}"}]} for i in range(STEPS)),
            {"name": f"s{STEPS}", "final": True},
        ],
    }],
}

_effects: dict[str, sqlite3.Connection] = {}


def _effects_db() -> sqlite3.Connection:
    path = os.environ["WORKER_TEST_EFFECTS"]
    conn = _effects.get(path)
    if conn is None:
        conn = _effects[path] = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
    return conn


def record_step(context, obj):
    """The step's effect: one row per execution, naming the process that ran it."""
    _effects_db().execute("INSERT INTO executions (key, pid) VALUES (?, ?)", (obj["idempotency_key"], os.getpid()))
    return "next"


def settings_for(db: str):
    url = f"sqlite:///{db}"
    return load_settings(environ={}, **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES})


def _worker_process(db: str, stop) -> None:
    settings = settings_for(db)
    services = open_services(settings)
    engine = Engine(from_dict(DEFINITION), services, settings)
    Worker(engine, services.log, batch_size=10, poll_s=0.02).run(stop_event=stop)
    services.close()


def _all_states(log: SqliteLog) -> dict:
    states: dict = {}
    after = None
    while page := log.read(after, 5000):
        states = fold_records(states, (r.data for r in page))
        after = page[-1].position
    return states


def test_kinesis_record_shape():
    from eventlog.log import LogRecord

    rec = kinesis_record(LogRecord("17", "cid-1", b"\x00\x01"), "sqlite:///x.db", 12.5)
    assert rec["eventSource"] == "aws:kinesis" and rec["eventSourceARN"] == "sqlite:///x.db"
    assert rec["kinesis"] == {"kinesisSchemaVersion": "1.0", "partitionKey": "cid-1", "sequenceNumber": "17",
                              "data": "AAE=", "approximateArrivalTimestamp": 12.5}


def test_worker_processes_drive_machines_to_completion_each_step_once(tmp_path, monkeypatch):
    db = str(tmp_path / "shared.db")
    effects = tmp_path / "effects.db"
    monkeypatch.setenv("WORKER_TEST_EFFECTS", str(effects))
    with sqlite3.connect(effects) as conn:
        conn.execute("CREATE TABLE executions (key TEXT NOT NULL, pid INTEGER NOT NULL)")

    settings = settings_for(db)
    services = open_services(settings)
    engine = Engine(from_dict(DEFINITION), services, settings)
    ids = engine.start_many("chain", [{"n": i} for i in range(MACHINES)])

    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    procs = [ctx.Process(target=_worker_process, args=(db, stop)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    try:
        give_up = time.monotonic() + 120  # a guard against hanging, not a speed check
        while time.monotonic() < give_up:
            states = _all_states(services.log)
            done = len(states) == MACHINES and all(s.terminal for s in states.values())
            if done and services.log.drained("fsmlog-worker"):  # the terminal records consumed too
                break
            time.sleep(0.1)
    finally:
        stop.set()
        for p in procs:
            p.join(30)
    assert [p.exitcode for p in procs] == [0] * WORKERS

    states = _all_states(services.log)
    assert {cid: s.status for cid, s in states.items()} == {cid: "completed" for cid in ids}
    assert all(s.state == f"s{STEPS}" and s.steps == STEPS + 1 for s in states.values())
    with sqlite3.connect(effects) as conn:
        rows = conn.execute("SELECT key, pid FROM executions").fetchall()
    runs = Counter(key for key, _ in rows)
    assert set(runs) == {f"{cid}:{n}" for cid in ids for n in range(STEPS)}
    assert max(runs.values()) == 1, [k for k, n in runs.items() if n > 1][:5]
    assert len({pid for _, pid in rows}) >= 2  # the work was shared
    assert services.log.drained("fsmlog-worker")
    services.close()


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_signal_stops_the_loop_after_the_current_batch(tmp_path, signum):
    import signal

    settings = settings_for(str(tmp_path / "sig.db"))
    services = open_services(settings)
    engine = Engine(from_dict(DEFINITION), services, settings)
    engine.start_many("chain", [{} for _ in range(5)])
    worker = Worker(engine, services.log, batch_size=2, poll_s=0.01)
    batches = []

    def on_batch(result):
        batches.append(result)
        if len(batches) == 1:
            os.kill(os.getpid(), getattr(signal, signum))

    previous = signal.getsignal(signal.SIGINT)
    worker.run(on_batch=on_batch)
    assert len(batches) == 1 and worker.stopping  # stopped after the batch in hand, not mid-way
    assert signal.getsignal(signal.SIGINT) is previous  # handlers restored
    assert services.log.committed("fsmlog-worker") == 2  # that batch's claim was completed
    services.close()
