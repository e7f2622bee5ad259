"""Each embedded backend owns its tables: created and migrated by it, and old files still open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from eventlog.backends.sqlite import SqliteLog
from eventlog.embedded import FORMAT_VERSION, EmbeddedBackend, Tables, open_db, parse_target
from eventlog.errors import BackendError
from handlers.cache.sqlite import SqliteCache
from handlers.cache.steps import StepKey
from handlers.deadletters.sqlite import SqliteDeadLetters
from handlers.environment.sqlite import SqliteEnvironment
from handlers.metrics.sqlite import SqliteMetrics
from handlers.retries.sqlite import SqliteRetries
from projections.checkpoints.sqlite import SqliteCheckpoints

FORMAT2 = Path(__file__).parent.parent / "fixtures" / "embedded_format2.sql"
BACKENDS = [SqliteLog, SqliteCheckpoints, SqliteRetries, SqliteCache, SqliteEnvironment, SqliteMetrics,
            SqliteDeadLetters]
OWNED = {
    SqliteLog: {"log", "consumers", "claims"},
    SqliteCheckpoints: {"checkpoints"},
    SqliteRetries: {"retries"},
    SqliteCache: {"leases", "fence", "flags", "progress"},
    SqliteEnvironment: {"environment"},
    SqliteMetrics: {"metrics", "metric_minutes"},
    SqliteDeadLetters: {"dead_letters"},
}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'local.db'}"


def _tables(url: str) -> set[str]:
    raw = sqlite3.connect(parse_target(url)[0])
    try:
        return {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} - {
            "sqlite_sequence"}
    finally:
        raw.close()


def test_opening_the_file_creates_only_the_bookkeeping(url):
    db = open_db(url)
    try:
        assert db.format_version() == FORMAT_VERSION
        assert db.table_versions() == {}
    finally:
        db.close()
    assert _tables(url) == {"schema_versions"}


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__)
def test_a_backend_creates_exactly_its_own_tables(url, backend):
    opened = backend(url)
    try:
        assert opened.db.table_versions() == {backend.tables.owner: backend.tables.version}
    finally:
        opened.close()
    assert _tables(url) == OWNED[backend] | {"schema_versions"}


def test_the_owners_and_their_tables_do_not_overlap():
    assert len({b.tables.owner for b in BACKENDS}) == len(BACKENDS)
    seen: set[str] = set()
    for tables in OWNED.values():
        assert not tables & seen
        seen |= tables


def _old_file(tmp_path: Path) -> str:
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    raw.executescript(FORMAT2.read_text())
    raw.close()
    return f"sqlite:///{path}"


def test_a_file_written_before_backends_owned_their_tables_opens_with_its_data(tmp_path):
    url = _old_file(tmp_path)
    clock = Clock(1_000.0)
    log, checkpoints, retries, cache, environment, metrics, dead = (
        SqliteLog(url, clock=clock), SqliteCheckpoints(url), SqliteRetries(url, clock=clock),
        SqliteCache(url, clock=clock), SqliteEnvironment(url), SqliteMetrics(url), SqliteDeadLetters(url))
    try:
        assert log.db.format_version() == FORMAT_VERSION
        assert log.db.table_versions() == {b.tables.owner: b.tables.version for b in BACKENDS}
        assert [(r.position, r.data) for r in log.read(None, 10)] == [("1", b"a"), ("2", b"b")]
        assert log.committed("worker") == 1
        assert log.append([]) == [] and log.claim_batch("w", "o2", 5, 60)[1][0].position == "2"
        assert checkpoints.load("m1") == b"snap" and checkpoints.version("m1") == 4
        assert [(d.data, d.due) for d in retries.due(6_000.0, 10)] == [(b"r", 5000.0)]
        assert cache.holder("lease:m9") == ("o", 1)
        assert cache.acquire("lease:m9", "o", 10) == 2  # the old fence counter goes on
        assert cache.marked("m1:3")
        assert cache.peek_steps([StepKey("m1", 1, 0)])[0].mark == 3145727  # the old high-water mark
        assert environment.get("env") == b"big"
        assert metrics.read() == {("n", (("a", "1"),)): 2.0}
        assert dead.get("542c14fdd7a6dd8b8c1b9526c9a6718e").data == b"\xff"
    finally:
        for b in (log, checkpoints, retries, cache, environment, metrics, dead):
            b.close()


class _Notes(EmbeddedBackend):
    """A backend of this test whose tables gained a column in a second migration."""

    tables = Tables("notes", (
        ("CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY)",),
        ("ALTER TABLE notes ADD COLUMN body TEXT NOT NULL DEFAULT ''",),
    ))


class _NotesV1(EmbeddedBackend):
    tables = Tables("notes", _Notes.tables.migrations[:1])


def test_later_migrations_run_once_on_a_file_at_an_earlier_one(url):
    first = _NotesV1(url)
    first.db.execute("INSERT INTO notes (id) VALUES ('a')")
    first.close()
    second = _Notes(url)
    try:
        assert second.db.table_versions() == {"notes": 2}
        second.db.execute("UPDATE notes SET body = 'kept' WHERE id = 'a'")
    finally:
        second.close()
    third = _Notes(url)  # a new connection: nothing runs again (ALTER TABLE twice would fail)
    try:
        assert third.db.execute("SELECT id, body FROM notes") == [("a", "kept")]
    finally:
        third.close()


def test_tables_at_a_later_migration_than_this_fsmlog_knows_are_refused(url):
    _Notes(url).close()
    with pytest.raises(BackendError, match="notes tables at version 2, newer than this fsmlog's 1"):
        _NotesV1(url)
    db = open_db(url)  # the refusal let go of its reference: the file closes normally
    db.close()
    assert db.closed
