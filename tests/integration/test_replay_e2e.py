"""Replay end to end.

SQLite: the real engine and local worker drive machines; some workers "die"
mid-step (a BaseException from an action, after or before its external
effect), which leaves their claim outstanding and their machines stalled.
``scan`` finds exactly those, ``refresh_snapshots`` snapshots them,
``rebuild`` + ``redispatch`` move them on, and a fresh worker completes them.
The action applies its effect once per ``obj["idempotency_key"]``; a counter
per (id, step) proves no effect was applied twice, while the attempts table
shows the re-executions did happen.

Kinesis (moto server over HTTP): ``rebuild`` from a snapshot plus the shard
tail equals a fold of the whole stream, also after a shard split.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter

import pytest

from eventlog.codec import encode
from eventlog.event import COMPLETED, RETRY, START, STEP, Event
from eventlog.log import OutRecord
from eventlog.settings import SOURCES, load_settings
from projections.fold import fold, fold_all
from projections.state import Snapshot, encode_snapshot
from replay.rebuild import rebuild, redispatch
from replay.scan import refresh_snapshots, scan

pytestmark = pytest.mark.integration

MODULE = "tests.integration.test_replay_e2e"
STEPS = 3  # do actions of s0, s1, s2; s3 is final
MACHINES = 6
EFFECTS_ENV = "REPLAY_E2E_EFFECTS"

DEFINITION = {
    "machines": [{
        "name": "pipeline",
        "max_retries": 2,
        "states": [
            *({"name": f"s{i}", "initial": i == 0, "do_action": f"{MODULE}.apply_effect",
               "transitions": [{"event": "next", "target": f"s{i + 1}"}]} for i in range(STEPS)),
            {"name": f"s{STEPS}", "final": True},
        ],
    }],
}

# (correlation id, step) -> where the worker dies: "after" the effect or "before" it (first attempt only)
CRASH_PLAN: dict[tuple[str, int], str] = {("e2e-1", 2): "after", ("e2e-2", 1): "before", ("e2e-4", 0): "after"}
_crashed: set[str] = set()


class WorkerDied(BaseException):
    """Stands in for the process dying mid-step: no engine code after the action runs."""


def _effects_db() -> sqlite3.Connection:
    conn = sqlite3.connect(os.environ[EFFECTS_ENV], timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def apply_effect(context, obj):
    """An action with an external effect, made idempotent by ``obj["idempotency_key"]``."""
    key = obj["idempotency_key"]
    cid, _, step = key.rpartition(":")
    plan = CRASH_PLAN.get((cid, int(step)))
    die = plan is not None and key not in _crashed
    conn = _effects_db()
    try:
        conn.execute("INSERT INTO attempts (key) VALUES (?)", (key,))
        if die and plan == "before":
            _crashed.add(key)
            raise WorkerDied(key)
        conn.execute("BEGIN IMMEDIATE")
        if conn.execute("SELECT 1 FROM applied WHERE key = ?", (key,)).fetchone() is None:
            conn.execute("INSERT INTO applied (key) VALUES (?)", (key,))
            conn.execute("INSERT INTO counter (cid, step, n) VALUES (?, ?, 1) "
                         "ON CONFLICT (cid, step) DO UPDATE SET n = n + 1", (cid, int(step)))
        conn.execute("COMMIT")
    finally:
        conn.close()
    if die:
        _crashed.add(key)
        raise WorkerDied(key)
    return "next"


@pytest.fixture
def effects(tmp_path, monkeypatch):
    path = tmp_path / "effects.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE attempts (key TEXT NOT NULL)")
        conn.execute("CREATE TABLE applied (key TEXT PRIMARY KEY)")
        conn.execute("CREATE TABLE counter (cid TEXT, step INTEGER, n INTEGER, PRIMARY KEY (cid, step))")
    monkeypatch.setenv(EFFECTS_ENV, str(path))
    _crashed.clear()
    return path


def test_scan_and_redispatch_complete_machines_whose_worker_died(tmp_path, effects):
    from handlers.engine import Engine
    from handlers.wiring import open_services
    from handlers.worker import Worker
    from projections.definition import from_dict

    url = f"sqlite:///{tmp_path.resolve() / 'fsm.db'}"
    settings = load_settings(environ={}, LEASE_SECONDS=1.0, LEASE_WAIT_SECONDS=10.0,
                             **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES})
    services = open_services(settings)
    defs = from_dict(DEFINITION)
    ids = [f"e2e-{i}" for i in range(MACHINES)]
    Engine(defs, services, settings).start_many("pipeline", [{"i": i} for i in range(MACHINES)], ids)

    # phase 1: workers run one record per claim; a worker that dies leaves its claim (and lease)
    # behind, and the replacement worker goes on with the rest
    died = 0
    while True:
        worker = Worker(Engine(defs, services, settings), services.log, batch_size=1, claim_ttl_s=3600)
        try:
            while worker.run_once() is not None:
                pass
            break
        except WorkerDied:
            died += 1
    assert died == len(CRASH_PLAN)

    # phase 2: the scan sees exactly the machines whose worker died
    later = time.time() + 3600
    progress: list[int] = []
    result = scan(services.log, services.checkpoints, now=later, stalled_after_s=15 * 60,
                  progress=progress.append, batch=7)
    stalled = {s.correlation_id: s for s in result.stalled}
    assert set(stalled) == {cid for cid, _ in CRASH_PLAN}
    for (cid, step), _where in CRASH_PLAN.items():
        s = stalled[cid].state
        assert (s.status, s.steps, s.retries, s.state) == ("running", step, 0, f"s{max(step - 1, 0)}")
        assert stalled[cid].stuck_s > 15 * 60
    assert {cid for cid, st in result.states.items() if st.status == "completed"} == set(ids) - set(stalled)
    assert progress and progress[-1] == result.records == len(services.log.read(None, 10_000))
    summary = {row["machine"]: row for row in result.summary()}["pipeline"]
    assert (summary["stalled"], summary["completed"], summary["total"]) == (3, 3, MACHINES)

    # snapshots: the stalled machines had none (the engine snapshots every 10 steps and at the end)
    report = refresh_snapshots(result, services.checkpoints, now=later, max_age_s=600)
    assert sorted(report.written) == sorted(stalled) and report.up_to_date == MACHINES - len(stalled)

    # phase 3: rebuild (from the fresh snapshot, nothing after it) and redispatch
    for cid in stalled:
        rebuilt = rebuild(cid, services, definitions=defs)
        assert rebuilt.snapshot_state == rebuilt.rebuilt_state == result.states[cid]
        assert rebuilt.tail_events == ()
        ev = redispatch(rebuilt, services, time.time)
        assert ev.kind == RETRY and ev.retries == 1 and ev.steps == rebuilt.rebuilt_state.steps
    # a second redispatch of the same step is harmless: the step runs once, the other is deduplicated
    again = redispatch(rebuild("e2e-1", services), services, time.time)
    assert again.retries == 2

    # phase 4: a fresh worker handles the redispatched steps and the machines run to the end
    Worker(Engine(defs, services, settings), services.log, batch_size=10, poll_s=0.01).run_until_drained()
    final = scan(services.log, services.checkpoints, now=later, stalled_after_s=15 * 60)
    assert final.stalled == []
    assert {cid: st.status for cid, st in final.states.items()} == {cid: "completed" for cid in ids}
    for cid in ids:
        assert rebuild(cid, services).rebuilt_state == final.states[cid]

    with sqlite3.connect(effects) as conn:
        counter = {(cid, step): n for cid, step, n in conn.execute("SELECT cid, step, n FROM counter")}
        attempts = Counter(k for (k,) in conn.execute("SELECT key FROM attempts"))
    expected = {(cid, step) for cid in ids for step in range(STEPS)}
    assert counter == {k: 1 for k in expected}  # every step's effect exactly once
    reruns = {key for key, n in attempts.items() if n > 1}
    assert reruns == {f"{cid}:{step}" for cid, step in CRASH_PLAN}  # the dead workers' steps ran again
    assert all(n == 2 for key, n in attempts.items() if key in reruns)  # ... once more, not twice more
    services.close()


# ---------------------------------------------------------------- Kinesis (moto server)


def _history(cid: str, steps: int, t0: float, *, complete: bool) -> list[Event]:
    out = [Event.create(START, cid, "order", "h1", 0, 0, "received", None, t0, {"cid": cid})]
    for i in range(1, steps + 1):
        out.append(Event.create(STEP, cid, "order", "h1", i, 0, f"s{i}", "go", t0 + i, {"i": i}))
        if i % 4 == 0:
            out.append(Event.create(RETRY, cid, "order", "h1", i, 1, f"s{i}", "go", t0 + i + 0.5, {"i": i},
                                    error_type="Boom", error_message="again"))
    if complete:
        out.append(Event.create(COMPLETED, cid, "order", "h1", steps + 1, 0, "done", None, t0 + steps + 1))
    return out


def _interleave(*histories: list[Event]) -> list[Event]:
    out: list[Event] = []
    queues = [list(h) for h in histories]
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def test_kinesis_rebuild_from_snapshot_and_shard_tail_equals_the_full_fold(moto_server, tmp_path):
    from eventlog import aws
    from eventlog.backends.kinesis import KinesisLog
    from handlers.wiring import open_services
    from tests.fixtures.servers import make_resources, settings_for

    arns = make_resources(moto_server, "kinesis", "checkpoints", shards=2)
    local = f"sqlite:///{tmp_path.resolve() / 'local.db'}"
    settings = settings_for(moto_server, PRIMARY_STREAM_SOURCE=arns["kinesis"],
                            PRIMARY_CHECKPOINT_SOURCE=arns["checkpoints"],
                            **{f"PRIMARY_{k}_SOURCE": local for k in ("RETRY", "CACHE", "ENVIRONMENT", "METRICS",
                                                                      "DEAD_LETTER")})
    stream = arns["kinesis"].rpartition("/")[2]
    client = aws.client("kinesis", arns["kinesis"], settings)
    services = open_services(settings)
    assert isinstance(services.log, KinesisLog)

    histories = {f"k-{i}": _history(f"k-{i}", 9 + i, 1_700_000_000.0 + 100 * i, complete=i % 2 == 0)
                 for i in range(6)}
    order = _interleave(*histories.values())
    positions = services.log.append([OutRecord(e.correlation_id, encode(e)) for e in order])
    at = dict(zip(order, positions, strict=True))
    assert len({p.rpartition(":")[0] for p in positions}) == 2  # the machines are spread over both shards

    whole = scan(services.log, None, now=1_800_000_000.0, stalled_after_s=60)
    assert whole.records == len(order) and whole.states == fold_all({}, order)

    for n, (cid, events) in enumerate(histories.items()):
        cut = 3 + n
        state = fold(None, events[:cut])
        snap = Snapshot(state, at[events[cut - 1]], state.definition_hash)
        assert services.checkpoints.save(cid, state.version, encode_snapshot(snap))
        got = rebuild(cid, services, settings=settings)
        assert got.snapshot_state == state
        assert list(got.tail_events) == events[cut:]  # exactly the shard tail after the snapshot
        assert got.rebuilt_state == whole.states[cid]
        assert got.position == at[events[-1]]

    # reshard: merge the two shards. The walk goes on from the snapshot's (now closed) shard into the
    # child it names as ParentShardId or AdjacentParentShardId. (moto copies both parents' records into
    # the child and keeps routing new records to the closed parent; the fold absorbs the copies.)
    shards = sorted(s["ShardId"] for s in client.list_shards(StreamName=stream)["Shards"])
    client.merge_shards(StreamName=stream, ShardToMerge=shards[0], AdjacentShardToMerge=shards[1])
    child = next(s for s in client.list_shards(StreamName=stream)["Shards"] if s["ShardId"] not in shards)
    assert {child.get("ParentShardId"), child.get("AdjacentParentShardId")} == set(shards)
    for cid in ("k-1", "k-2"):
        events = histories[cid]
        more = [Event.create(STEP, cid, "order", "h1", s, 0, f"s{s}", "go", 1_700_000_900.0 + s, {"i": s})
                for s in range(events[-1].steps + 1, events[-1].steps + 4)] if cid == "k-1" else []
        if more:
            services.log.append([OutRecord(cid, encode(e)) for e in more])
        got = rebuild(cid, services, settings=settings)
        assert got.rebuilt_state == fold(None, events + more)
        assert got.position.rpartition(":")[0] == child["ShardId"]  # the child was read, after the parent
        assert set(more) <= set(got.tail_events)
    services.close()
