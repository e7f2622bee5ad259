"""The embedded database: one SQLite file that serves every interface the engine needs.

Nothing configured means everything (log, checkpoints, retries, cache,
environment, metrics, dead letters) lives in ``.fsmlog/local.db``. This module
owns that file: how it is named, opened, shared and laid out.

Naming. ``open_db`` takes ``sqlite:///relative/path.db`` (relative to the
working directory), ``sqlite:////abs/path.db`` or a plain path. A URL may carry
``?synchronous=full``. Parent directories are created.

Sharing. Every backend of one file in one process uses ONE connection, so a
transaction of the log and one of the cache never wait on each other inside a
process, and SQLite's file locks only arbitrate between processes. The cache of
connections is keyed by (absolute path, process id): a forked or
multiprocessing child never touches its parent's connection (SQLite forbids
using a connection across ``fork``) and opens its own instead. Threads share the
connection under a lock (``check_same_thread=False``), so a backend may be used
from any thread. Connections are reference counted: ``EmbeddedDB.close`` closes
the file when its last user lets go.

Transactions. The connection runs in autocommit mode (``isolation_level=None``)
and every read-modify-write goes through ``db.transaction()``, which issues
``BEGIN IMMEDIATE``: the write lock is taken up front, so two processes never
both read and then fail to upgrade (the WAL case where SQLite cannot wait and
returns SQLITE_BUSY at once). Other processes wait up to ``busy_timeout_s``
(30 s) for the lock; after that ``ServiceUnavailable`` is raised, which
failover understands.

Durability. The file runs in WAL mode with ``synchronous=NORMAL`` by default:
a committed transaction survives the process being killed (``kill -9``, an
OOM kill, a crash) because the WAL is written before COMMIT returns, and that
is what fsmlog promises locally. What NORMAL does not promise is surviving a
power loss or OS crash: the last transactions before it may be rolled back
(the database itself never corrupts). ``synchronous="FULL"`` (or
``?synchronous=full`` in the URL) fsyncs the WAL on every commit and survives
that too, at a cost in commit latency. When several openers ask for different
levels, the strongest one wins.

Schema. Every embedded table is created at open (idempotently, in one
transaction) and ``PRAGMA user_version`` records the schema version; a file
written by a newer fsmlog is refused rather than misread.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from .errors import BackendError, ServiceUnavailable, SettingsError
from .settings import DEFAULT_SQLITE

SCHEMA_VERSION = 2  # 2: progress (high-water marks of handled step attempts)
BUSY_TIMEOUT_S = 30.0
MEMORY = ":memory:"

# weakest first; the strongest requested level wins
_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")

SCHEMA: tuple[str, ...] = (
    # the event log; AUTOINCREMENT: positions are never reused, even after deletes
    """CREATE TABLE IF NOT EXISTS log (
        position INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL,
        data BLOB NOT NULL,
        time REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS log_key ON log (key, position)",
    # committed offsets of local consumers (the local worker)
    "CREATE TABLE IF NOT EXISTS consumers (name TEXT PRIMARY KEY, position INTEGER NOT NULL)",
    # ranges of the log claimed by cooperating worker processes
    """CREATE TABLE IF NOT EXISTS claims (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        consumer TEXT NOT NULL,
        owner TEXT NOT NULL,
        first INTEGER NOT NULL,
        last INTEGER NOT NULL,
        expires REAL NOT NULL,
        done INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS claims_consumer ON claims (consumer, first)",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        cid TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        data BLOB NOT NULL,
        time REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS retries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL,
        data BLOB NOT NULL,
        due REAL NOT NULL,
        claimed_until REAL NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS retries_due ON retries (due)",
    "CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, owner TEXT NOT NULL, token INTEGER NOT NULL, "
    "expires REAL NOT NULL)",
    # the fence counter outlives its lease so tokens increase forever
    "CREATE TABLE IF NOT EXISTS fence (key TEXT PRIMARY KEY, token INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS flags (key TEXT PRIMARY KEY, expires REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS progress (cid TEXT PRIMARY KEY, done INTEGER NOT NULL, "
    "done_expires REAL NOT NULL, aborted_expires REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS flags_expires ON flags (expires)",
    "CREATE TABLE IF NOT EXISTS environment (id TEXT PRIMARY KEY, data BLOB NOT NULL)",
    """CREATE TABLE IF NOT EXISTS metrics (
        name TEXT NOT NULL,
        dimensions TEXT NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (name, dimensions))""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        source TEXT NOT NULL,
        position TEXT NOT NULL,
        data BLOB NOT NULL,
        time REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS dead_letters_time ON dead_letters (time)",
)


def parse_target(path_or_url: str | os.PathLike[str]) -> tuple[str, dict[str, str]]:
    """The absolute file path (or ``:memory:``) and the URL options of a ``sqlite:`` URL or plain path."""
    text = os.fspath(path_or_url)
    options: dict[str, str] = {}
    if text.startswith("sqlite:"):
        rest, _, query = text[len("sqlite:"):].partition("?")
        if not rest.startswith("///"):
            raise SettingsError(
                f"embedded database URL {text!r} must look like sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        path = rest[3:]
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name != "synchronous":
                raise SettingsError(f"embedded database URL {text!r} has unknown option {name!r}; known: synchronous")
            options[name] = value
    else:
        path = text
    if not path:
        raise SettingsError(f"embedded database {text!r} names no file")
    if path == MEMORY:
        return MEMORY, options
    return str(Path(path).expanduser().absolute()), options


def _synchronous(value: str | None) -> str | None:
    if value is None:
        return None
    level = value.strip().upper()
    if level not in _SYNCHRONOUS:
        raise SettingsError(f"embedded database synchronous={value!r} is not one of {', '.join(_SYNCHRONOUS)}")
    return level


def _stronger(a: str, b: str) -> str:
    return a if _SYNCHRONOUS.index(a) >= _SYNCHRONOUS.index(b) else b


class EmbeddedDB:
    """One SQLite connection to one file, shared by every embedded backend of this process."""

    def __init__(self, path: str, synchronous: str = "NORMAL", busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        self.pid = os.getpid()
        self.busy_timeout_s = busy_timeout_s
        self.synchronous = synchronous
        self._lock = threading.RLock()
        self._depth = 0  # nesting of transaction(); only touched while holding _lock
        self._refs = 1
        self._conn: sqlite3.Connection | None = None
        if path != MEMORY:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._set_wal()
            self._conn.execute(f"PRAGMA synchronous = {synchronous}")
            self._create_schema()
        except sqlite3.Error as exc:
            if self._conn is not None:
                self._conn.close()
            raise self._error(exc, "opening") from exc
        except BaseException:
            if self._conn is not None:
                self._conn.close()
            raise

    # -- opening ---------------------------------------------------------------------------

    def _set_wal(self) -> None:
        assert self._conn is not None
        if self.path == MEMORY:
            return
        # Switching to WAL needs a moment of exclusive access; a process opening the file at the
        # same instant can make it fail at once instead of waiting, so try again for a while.
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise BackendError(f"embedded database {self.path} cannot use WAL mode (got {mode!r})")
                return
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _create_schema(self) -> None:
        found = self.schema_version()
        if found > SCHEMA_VERSION:
            raise BackendError(
                f"embedded database {self.path} has schema version {found}, newer than this fsmlog's "
                f"{SCHEMA_VERSION}; upgrade fsmlog or use another file"
            )
        if found == SCHEMA_VERSION:
            return
        with self.transaction() as conn:
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def schema_version(self) -> int:
        return int(self.execute("PRAGMA user_version")[0][0])

    # -- use -------------------------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BackendError(f"embedded database {self.path} is closed")
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error), holding the thread lock.

        Nested use in one thread joins the outer transaction. SQLite errors leave as
        ``ServiceUnavailable`` (locked, I/O) or ``BackendError``; other errors pass unchanged.
        """
        with self._lock:
            conn = self.conn
            if self._depth:
                self._depth += 1
                try:
                    yield conn
                finally:
                    self._depth -= 1
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc, "starting a transaction") from exc
            self._depth = 1
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the original error is the one worth reporting
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc, "in a transaction") from exc
                raise
            finally:
                self._depth = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """One statement, all rows fetched, under the thread lock (inside the open transaction, if any)."""
        with self._lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc, "executing a statement") from exc

    def _error(self, exc: sqlite3.Error, doing: str) -> BackendError:
        text = str(exc)
        where = f"embedded database {self.path}: {doing}: {text}"
        if isinstance(exc, sqlite3.OperationalError) and any(
            s in text for s in ("locked", "busy", "disk I/O", "unable to open")
        ):
            return ServiceUnavailable(
                f"{where} (another process may hold the write lock for over {self.busy_timeout_s:.0f}s, "
                "or the file is unreachable)"
            )
        return BackendError(where)

    # -- sharing ---------------------------------------------------------------------------

    def _retain(self, synchronous: str | None) -> None:
        with self._lock:
            self._refs += 1
            if synchronous is not None:
                wanted = _stronger(self.synchronous, synchronous)
                if wanted != self.synchronous:
                    self.execute(f"PRAGMA synchronous = {wanted}")
                    self.synchronous = wanted

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        """Let go of this user's reference; the connection closes with the last one."""
        with _REGISTRY_LOCK:
            with self._lock:
                if self._conn is None:
                    return
                self._refs -= 1
                if self._refs > 0:
                    return
                conn, self._conn = self._conn, None
                if _REGISTRY.get((self.path, self.pid)) is self:
                    del _REGISTRY[(self.path, self.pid)]
                if self.pid == os.getpid():  # never close a connection inherited across fork
                    conn.close()

    def __repr__(self) -> str:
        return f"EmbeddedDB({self.path!r}, pid={self.pid}, synchronous={self.synchronous})"


_REGISTRY: dict[tuple[str, int], EmbeddedDB] = {}
_REGISTRY_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    # The lock may have been held by another thread at fork time; the child starts afresh.
    # The parent's entries stay (keyed by its pid) and are never used or closed here.
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def open_db(
    path_or_url: str | os.PathLike[str] = DEFAULT_SQLITE,
    *,
    synchronous: str | None = None,
    busy_timeout_s: float = BUSY_TIMEOUT_S,
) -> EmbeddedDB:
    """The process's shared connection to the file, opened (and its schema created) on first use.

    ``synchronous``: ``"NORMAL"`` (default; survives kill -9) or ``"FULL"`` (also survives power
    loss); the URL's ``?synchronous=`` works too. Every call must be matched by ``close()``.
    """
    path, options = parse_target(path_or_url)
    asked = [lv for lv in (_synchronous(synchronous), _synchronous(options.get("synchronous"))) if lv]
    level = max(asked, key=_SYNCHRONOUS.index) if asked else None
    key = (path, os.getpid())
    with _REGISTRY_LOCK:
        db = _REGISTRY.get(key)
        if db is not None and not db.closed:
            db._retain(level)
            return db
        db = EmbeddedDB(path, level or "NORMAL", busy_timeout_s)
        _REGISTRY[key] = db
        return db


class EmbeddedBackend:
    """Base of every SQLite backend: target naming, the shared connection, clock injection, close.

    The connection is looked up again when the process id changes, so a backend object
    inherited by a forked child works there too; pickling (multiprocessing ``spawn``)
    carries the target and reopens.
    """

    name: str

    def __init__(self, target: str | os.PathLike[str] = DEFAULT_SQLITE, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = os.fspath(target)
        self.clock = clock
        self._db = open_db(self.name)
        self._closed = False

    @classmethod
    def from_target(cls, target: str, settings: Any) -> EmbeddedBackend:
        """Open from a setting value (``sqlite:///...``); nothing else in ``settings`` applies."""
        return cls(target)

    @property
    def db(self) -> EmbeddedDB:
        if self._closed:
            raise BackendError(f"{type(self).__name__} on {self.name} is closed")
        if self._db.pid != os.getpid():
            self._db = open_db(self.name)
        return self._db

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._db.pid == os.getpid():
                self._db.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_db"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if not self._closed:
            self._db = open_db(self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
