"""The embedded SQLite file: naming, sharing, WAL, durability, processes, claims, injected clocks."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from eventlog.backends.sqlite import SqliteLog
from eventlog.embedded import FORMAT_VERSION, open_db, parse_target
from eventlog.errors import BackendError, ServiceUnavailable, SettingsError
from eventlog.log import OutRecord
from handlers.cache.sqlite import SqliteCache
from handlers.deadletters.sqlite import SqliteDeadLetters
from handlers.environment.sqlite import SqliteEnvironment
from handlers.metrics import Datum
from handlers.metrics.sqlite import SqliteMetrics
from handlers.retries import ScheduledRetry
from handlers.retries.sqlite import SqliteRetries
from projections.checkpoints.sqlite import SqliteCheckpoints

FORK = multiprocessing.get_context("fork")
SPAWN = multiprocessing.get_context("spawn")


class Clock:
    """A hand-moved clock for TTL logic without sleeping."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'db' / 'local.db'}"


@pytest.fixture
def log(url):
    backend = SqliteLog(url)
    yield backend
    backend.close()


def _raw(url: str) -> sqlite3.Connection:
    """An independent connection, as another program would open the file."""
    return sqlite3.connect(parse_target(url)[0], isolation_level=None)


# -- naming and opening ------------------------------------------------------------------------


def test_targets_relative_absolute_and_plain(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_target("sqlite:///rel/x.db") == (str(tmp_path / "rel" / "x.db"), {})
    assert parse_target(f"sqlite:///{tmp_path}/abs.db") == (str(tmp_path / "abs.db"), {})
    assert parse_target("plain/y.db") == (str(tmp_path / "plain" / "y.db"), {})
    assert parse_target(tmp_path / "p.db") == (str(tmp_path / "p.db"), {})
    assert parse_target("sqlite:///z.db?synchronous=full") == (str(tmp_path / "z.db"), {"synchronous": "full"})


@pytest.mark.parametrize("bad", ["sqlite://host/x.db", "sqlite:x.db", "sqlite:///", "sqlite:///x.db?mode=ro", ""])
def test_bad_targets_are_refused(bad):
    with pytest.raises(SettingsError):
        parse_target(bad)


def test_open_creates_parent_directories_wal_and_bookkeeping(tmp_path):
    path = tmp_path / "a" / "b" / "c.db"
    db = open_db(f"sqlite:///{path}")
    try:
        assert path.exists()
        assert db.execute("PRAGMA journal_mode")[0][0] == "wal"
        assert db.execute("PRAGMA synchronous")[0][0] == 1  # NORMAL
        assert db.execute("PRAGMA busy_timeout")[0][0] >= 30_000
        assert db.format_version() == FORMAT_VERSION  # each backend's tables: test_embedded_tables.py
    finally:
        db.close()


def test_one_shared_connection_per_file_reference_counted(url):
    a, b = SqliteLog(url), SqliteCache(url)
    assert a.db is b.db
    a.close()
    assert not b.db.closed
    assert b.acquire("k", "o", 10) == 1
    b.close()
    assert a._db.closed  # the last user closed the file
    c = SqliteCheckpoints(url)
    assert c.db is not a._db and not c.db.closed
    c.close()


def test_synchronous_full_by_url_and_the_strongest_wins(tmp_path):
    normal = open_db(tmp_path / "s.db")
    full = open_db(f"sqlite:///{tmp_path / 's.db'}?synchronous=FULL")
    try:
        assert normal is full
        assert full.execute("PRAGMA synchronous")[0][0] == 2
        again = open_db(tmp_path / "s.db", synchronous="NORMAL")
        assert again.execute("PRAGMA synchronous")[0][0] == 2
        again.close()
    finally:
        full.close()
        normal.close()
    with pytest.raises(SettingsError):
        open_db(tmp_path / "t.db", synchronous="sometimes")


def test_schema_creation_is_idempotent(url):
    env = SqliteEnvironment(url)
    env.put("e", b"\x00")
    env.close()
    raw = _raw(url)
    raw.execute("PRAGMA user_version = 0")  # as if written by an older release: bookkeeping re-run
    raw.execute("DELETE FROM schema_versions")  # and the tables' first migration with it
    raw.close()
    env = SqliteEnvironment(url)
    try:
        assert env.db.format_version() == FORMAT_VERSION
        assert env.get("e") == b"\x00"
    finally:
        env.close()


def test_a_file_from_a_newer_release_is_refused(url):
    open_db(url).close()
    raw = _raw(url)
    raw.execute(f"PRAGMA user_version = {FORMAT_VERSION + 1}")
    raw.close()
    with pytest.raises(BackendError, match="newer"):
        open_db(url)


def test_a_lock_held_too_long_is_service_unavailable(tmp_path):
    path = tmp_path / "locked.db"
    SqliteLog(path).close()  # its tables exist: opening it again needs no write
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("BEGIN IMMEDIATE")
    db = open_db(path, busy_timeout_s=0.1)
    try:
        log = SqliteLog(path)
        with pytest.raises(ServiceUnavailable):
            log.append([OutRecord("k", b"x")])
        log.close()
    finally:
        raw.execute("ROLLBACK")
        raw.close()
        db.close()


# -- transactions -------------------------------------------------------------------------------


def test_append_is_all_or_nothing(log):
    with pytest.raises(TypeError):
        log.append([OutRecord("k", b"fine"), OutRecord("k", None)])
    assert log.read(None, 10) == []
    assert log.append([OutRecord("k", b"next")]) == ["1"]  # the rolled-back positions are not used up


def test_nested_transactions_join_the_outer_one(url):
    env = SqliteEnvironment(url)
    db = env.db
    try:
        with pytest.raises(RuntimeError):
            with db.transaction() as outer:
                outer.execute("INSERT INTO environment (id, data) VALUES ('a', x'01')")
                with db.transaction() as inner:
                    inner.execute("INSERT INTO environment (id, data) VALUES ('b', x'02')")
                raise RuntimeError("roll everything back")
        assert db.execute("SELECT COUNT(*) FROM environment")[0][0] == 0
    finally:
        env.close()


# -- durability ---------------------------------------------------------------------------------


def test_data_survives_closing_and_reopening(url):
    backends = [SqliteLog(url), SqliteCheckpoints(url), SqliteEnvironment(url), SqliteDeadLetters(url)]
    log, checkpoints, environment, dead = backends
    positions = log.append([OutRecord("m1", b"a"), OutRecord("m2", b"b")])
    checkpoints.save("m1", 4, b"snap")
    environment.put("env", b"big")
    letter = dead.park("bad", "src", "9", b"\xff", 5.0)
    for b in backends:
        b.close()
    assert log._db.closed
    again = [SqliteLog(url), SqliteCheckpoints(url), SqliteEnvironment(url), SqliteDeadLetters(url)]
    try:
        assert [r.position for r in again[0].read(None, 10)] == positions
        assert again[1].load("m1") == b"snap"
        assert again[2].get("env") == b"big"
        assert again[3].get(letter).data == b"\xff"
    finally:
        for b in again:
            b.close()


def _append_then_die(url: str) -> None:
    log = SqliteLog(url)
    log.append([OutRecord("survivor", b"committed before kill -9")])
    os.kill(os.getpid(), signal.SIGKILL)


def test_committed_appends_survive_kill_9(url):
    proc = FORK.Process(target=_append_then_die, args=(url,))
    proc.start()
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    log = SqliteLog(url)
    try:
        assert [r.data for r in log.read_key("survivor")] == [b"committed before kill -9"]
    finally:
        log.close()


# -- threads and processes ----------------------------------------------------------------------


def test_threads_share_the_connection_safely(url):
    shared = SqliteLog(url)
    got: list[str] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        own = SqliteLog(url) if i % 2 else shared  # own backend objects share the connection too
        for j in range(25):
            positions = own.append([OutRecord(f"t{i}", bytes([j])), OutRecord(f"t{i}", bytes([j]))])
            with lock:
                got.extend(positions)
        if own is not shared:
            own.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(got) == len(set(got)) == 8 * 25 * 2
        assert [int(r.position) for r in shared.read(None, 10_000)] == sorted(int(p) for p in got)
    finally:
        shared.close()


def _append_many(url: str, worker: int, out: str) -> None:
    log = SqliteLog(url)
    positions = []
    for j in range(30):
        positions += log.append([OutRecord(f"p{worker}", bytes([j])), OutRecord(f"p{worker}", bytes([j]))])
    Path(out).write_text(json.dumps(positions))


def test_processes_append_concurrently_without_losing_or_reusing_positions(url, tmp_path):
    SqliteLog(url).close()  # create the file first, as a deployed worker would find it
    outs = [tmp_path / f"out{i}.json" for i in range(4)]
    procs = [FORK.Process(target=_append_many, args=(url, i, str(outs[i]))) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    positions = [int(p) for out in outs for p in json.loads(out.read_text())]
    assert len(positions) == len(set(positions)) == 4 * 30 * 2
    log = SqliteLog(url)
    try:
        assert sorted(positions) == [int(r.position) for r in log.read(None, 10_000)]
        for i in range(4):
            assert [r.data for r in log.read_key(f"p{i}")] == [bytes([j]) for j in range(30) for _ in (0, 1)]
    finally:
        log.close()


def _check_child_reopens(log: SqliteLog, parent_db_id: int, out: str) -> None:
    db = log.db
    log.append([OutRecord("child", str(os.getpid()).encode())])
    Path(out).write_text(json.dumps({"pid": db.pid, "mine": os.getpid(), "same": id(db) == parent_db_id}))


@pytest.mark.parametrize("ctx", [FORK, SPAWN], ids=["fork", "spawn"])
def test_a_child_process_opens_its_own_connection(log, tmp_path, ctx):
    out = tmp_path / "child.json"
    proc = ctx.Process(target=_check_child_reopens, args=(log, id(log.db), str(out)))
    proc.start()
    proc.join()
    assert proc.exitcode == 0
    seen = json.loads(out.read_text())
    assert seen["pid"] == seen["mine"] != os.getpid()
    assert not seen["same"]
    assert [r.data for r in log.read_key("child")] == [str(seen["mine"]).encode()]
    assert log.db.pid == os.getpid()


# -- consumer offsets and claims ----------------------------------------------------------------


def test_commit_only_moves_forward(log):
    assert log.committed("w") is None
    log.commit("w", "5")
    log.commit("w", 3)
    assert log.committed("w") == 5
    log.commit("w", 9)
    assert log.committed("w") == 9
    assert log.committed("other") is None


def test_claims_do_not_overlap_and_commit_the_completed_prefix(url):
    clock = Clock()
    log = SqliteLog(url, clock=clock)
    try:
        log.append([OutRecord("k", bytes([i])) for i in range(10)])
        first = log.claim_batch("w", "a", 4, 60)
        second = log.claim_batch("w", "b", 4, 60)
        third = log.claim_batch("w", "c", 4, 60)
        assert [int(r.position) for r in first[1]] == [1, 2, 3, 4]
        assert [int(r.position) for r in second[1]] == [5, 6, 7, 8]
        assert [int(r.position) for r in third[1]] == [9, 10]
        assert log.claim_batch("w", "d", 4, 60) is None
        assert log.complete_claim(second[0]) is True
        assert log.committed("w") is None  # 1..4 still being handled
        assert log.complete_claim(first[0]) is True
        assert log.committed("w") == 8
        assert not log.drained("w")
        assert log.complete_claim(third[0]) is True
        assert log.complete_claim(third[0]) is False
        assert log.committed("w") == 10 and log.drained("w")
        log.append([OutRecord("k", b"late")])
        assert [r.data for r in log.claim_batch("w", "a", 4, 60)[1]] == [b"late"]
        assert log.claim_batch("other", "a", 100, 60)[1][0].position == "1"  # consumers are independent
    finally:
        log.close()


def test_an_expired_claim_is_claimed_again_first_and_the_old_id_goes_stale(url):
    clock = Clock()
    log = SqliteLog(url, clock=clock)
    try:
        log.append([OutRecord("k", bytes([i])) for i in range(6)])
        dead = log.claim_batch("w", "dies", 3, 10)
        live = log.claim_batch("w", "lives", 3, 10)
        assert log.claim_batch("w", "third", 3, 10) is None
        clock.now += 5
        assert log.complete_claim(live[0])
        clock.now += 6  # the dead worker's claim has run out
        again = log.claim_batch("w", "rescuer", 100, 10)
        assert again[0] != dead[0]
        assert again[1] == dead[1]
        assert log.complete_claim(dead[0]) is False
        assert log.committed("w") is None
        assert log.complete_claim(again[0])
        assert log.committed("w") == 6
    finally:
        log.close()


def _claim_until_drained(url: str, owner: str, out: str, ttl_s: float) -> None:
    log = SqliteLog(url)
    handled: list[int] = []
    while not log.drained("worker"):
        claimed = log.claim_batch("worker", owner, 7, ttl_s)
        if claimed is None:  # the rest is claimed by others (or by a dead worker until it expires)
            time.sleep(0.005)
            continue
        claim_id, records = claimed
        handled.extend(int(r.position) for r in records)
        log.complete_claim(claim_id)
    Path(out).write_text(json.dumps(handled))


def _claim_and_crash(url: str) -> None:
    SqliteLog(url).claim_batch("worker", "crasher", 7, 0.3)
    os._exit(3)


def _run_claimers(url: str, tmp_path: Path, workers: int, ttl_s: float) -> list[list[int]]:
    outs = [tmp_path / f"claims{i}.json" for i in range(workers)]
    procs = [FORK.Process(target=_claim_until_drained, args=(url, f"w{i}", str(outs[i]), ttl_s))
             for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0] * workers
    return [json.loads(o.read_text()) for o in outs]


@pytest.mark.parametrize("workers", [2, 4])
def test_processes_claiming_without_crashes_handle_every_position_exactly_once(url, tmp_path, workers):
    log = SqliteLog(url)
    for i in range(20):
        log.append([OutRecord(f"m{j}", bytes([i, j])) for j in range(10)])
    handled = _run_claimers(url, tmp_path, workers, ttl_s=60)
    everything = sorted(p for each in handled for p in each)
    assert everything == list(range(1, 201))
    assert log.committed("worker") == 200
    log.close()


def test_a_worker_dying_with_a_claim_loses_nothing(url, tmp_path):
    log = SqliteLog(url)
    log.append([OutRecord(f"m{i}", bytes([i])) for i in range(60)])
    crasher = FORK.Process(target=_claim_and_crash, args=(url,))
    crasher.start()
    crasher.join()
    assert crasher.exitcode == 3
    handled = _run_claimers(url, tmp_path, 3, ttl_s=0.3)
    assert set(p for each in handled for p in each) == set(range(1, 61))
    assert log.committed("worker") == 60
    log.close()


# -- injected clocks: cache and retries ---------------------------------------------------------


def test_cache_leases_expire_by_the_clock(url):
    clock = Clock()
    cache = SqliteCache(url, clock=clock)
    try:
        first = cache.acquire("m", "a", 10)
        assert cache.holder("m") == ("a", first)
        again = cache.acquire("m", "a", 10)
        assert again == first + 1  # re-entrant acquire hands out a new token
        cache.release("m", "a", first)  # the superseded token releases nothing
        assert cache.acquire("m", "b", 10) is None
        clock.now += 10  # expires exactly now: free
        taken = cache.acquire("m", "b", 10)
        assert taken == again + 1
        assert cache.purge_expired() == 0
        clock.now += 11
        assert cache.holder("m") is None
        assert cache.purge_expired() == 1
        assert cache.acquire("m", "c", 10) == taken + 1  # the fence counter outlived the lease row
    finally:
        cache.close()


def test_cache_flags_expire_by_the_clock(url):
    clock = Clock()
    cache = SqliteCache(url, clock=clock)
    try:
        assert cache.mark("cid:3", 5)
        clock.now += 4.9
        assert cache.marked("cid:3") and not cache.mark("cid:3", 5)
        clock.now += 0.1
        assert not cache.marked("cid:3")
        assert cache.mark("cid:3", 5)
    finally:
        cache.close()


def test_retry_claims_expire_and_done_deletes(url):
    retries = SqliteRetries(url, claim_s=60)
    try:
        retries.schedule([ScheduledRetry("a", b"ra", 100.0), ScheduledRetry("b", b"rb", 200.0)])
        assert retries.due(99.0, 10) == []
        [a] = retries.due(150.0, 10)
        assert a.data == b"ra"
        assert retries.due(150.0, 10) == []  # claimed
        assert [d.data for d in retries.due(209.0, 10)] == [b"rb"]
        assert [d.data for d in retries.due(210.0, 10)] == [b"ra"]  # a's claim ran out: due again
        retries.done([a.handle, "not-a-handle"])
        assert retries.pending() == 1
        assert [d.data for d in retries.due(1_000.0, 10)] == [b"rb"]
    finally:
        retries.close()


def test_metrics_read_keys_match_the_buffer(url):
    metrics = SqliteMetrics(url)
    try:
        metrics.put([Datum("n", 1.0, (("b", "2"), ("a", "1")))])
        metrics.put([Datum("n", 1.5, (("a", "1"), ("b", "2")))])
        assert metrics.read() == {("n", (("a", "1"), ("b", "2"))): 2.5}
    finally:
        metrics.close()


def test_from_target_uses_the_setting_value(url):
    from eventlog.settings import load_settings
    from handlers.wiring import open_backend

    settings = load_settings({}, PRIMARY_CACHE_SOURCE=url)
    cache = open_backend("CACHE", settings.source("CACHE"), settings)
    try:
        assert isinstance(cache, SqliteCache) and cache.name == url
    finally:
        cache.close()
