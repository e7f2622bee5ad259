"""The embedded database: one SQLite file that serves every interface the engine needs.

Nothing configured means everything (log, checkpoints, retries, cache,
environment, metrics, dead letters) lives in ``.fsmlog/local.db``. This module
owns that file: how it is named, opened and shared, and the bookkeeping of
which backend's tables are at which migration.

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

Schema. Each backend owns its tables: it declares them as ``Tables`` (an owner
name and its migrations) and they are brought up to date the first time the
backend opens the file in a process. This module creates only its bookkeeping,
``schema_versions`` (owner -> migrations applied), and ``PRAGMA user_version``
records the file's format. A file written by a newer fsmlog (a newer format, or
an owner's tables at a later migration) is refused rather than misread. So the
log layer never names the tables of the layers above it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from .errors import BackendError, ServiceUnavailable, SettingsError
from .settings import DEFAULT_SQLITE, Settings

FORMAT_VERSION = 3  # PRAGMA user_version; 3: each backend's tables versioned in ``schema_versions``
BUSY_TIMEOUT_S = 30.0
MEMORY = ":memory:"

# weakest first; the strongest requested level wins
_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")

# The bookkeeping, the only table this module creates: which migration of each owner's tables
# the file has reached.
_BOOKKEEPING = "CREATE TABLE IF NOT EXISTS schema_versions (owner TEXT PRIMARY KEY, version INTEGER NOT NULL)"


@dataclass(frozen=True)
class Tables:
    """The tables one embedded backend owns: a name for them and their migrations, oldest first.

    Each migration is a tuple of statements run in one transaction; the file records how many
    of an owner's migrations it has had. Files written before owners had versions (format 2
    and older) already hold every table, so an owner's first migration must be idempotent
    (``CREATE ... IF NOT EXISTS``). Later migrations run exactly once and are never edited.
    """

    owner: str
    migrations: tuple[tuple[str, ...], ...]

    @property
    def version(self) -> int:
        return len(self.migrations)


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
        self._ensured: dict[str, int] = {}  # owner -> version, known current
        if path != MEMORY:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._set_wal()
            self._conn.execute(f"PRAGMA synchronous = {synchronous}")
            self._create_bookkeeping()
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

    def _create_bookkeeping(self) -> None:
        found = self.format_version()
        if found > FORMAT_VERSION:
            raise BackendError(
                f"embedded database {self.path} has format version {found}, newer than this fsmlog's "
                f"{FORMAT_VERSION}; upgrade fsmlog or use another file"
            )
        if found == FORMAT_VERSION:
            return
        with self.transaction() as conn:
            conn.execute(_BOOKKEEPING)
            conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")

    def ensure(self, tables: Tables) -> None:
        """Bring ``tables`` up to their latest migration, once per connection.

        A file whose ``tables`` are at a later migration than this fsmlog knows is refused
        rather than misread.
        """
        if self._ensured.get(tables.owner) == tables.version:
            return
        if self._table_version(tables) == tables.version:  # a read: no write lock when nothing is due
            self._ensured[tables.owner] = tables.version
            return
        with self.transaction():
            found = self._table_version(tables)  # again, under the lock: another process may have run them
            for migration in tables.migrations[found:]:
                for statement in migration:
                    self.execute(statement)
            if found < tables.version:
                self.execute(
                    "INSERT INTO schema_versions (owner, version) VALUES (?, ?) "
                    "ON CONFLICT (owner) DO UPDATE SET version = excluded.version",
                    (tables.owner, tables.version),
                )
        self._ensured[tables.owner] = tables.version

    def _table_version(self, tables: Tables) -> int:
        rows = self.execute("SELECT version FROM schema_versions WHERE owner = ?", (tables.owner,))
        found = int(rows[0][0]) if rows else 0
        if found > tables.version:
            raise BackendError(
                f"embedded database {self.path} has {tables.owner} tables at version {found}, newer "
                f"than this fsmlog's {tables.version}; upgrade fsmlog or use another file"
            )
        return found

    def table_versions(self) -> dict[str, int]:
        """Each owner's migration count as the file records it (for tools and tests)."""
        return {str(owner): int(version) for owner, version in self.execute("SELECT owner, version FROM schema_versions")}

    def format_version(self) -> int:
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
    """The process's shared connection to the file, opened (and its bookkeeping created) on first use.

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
    tables: ClassVar[Tables]  # what this backend keeps in the file

    def __init__(self, target: str | os.PathLike[str] = DEFAULT_SQLITE, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = os.fspath(target)
        self.clock = clock
        self._db = self._open()
        self._closed = False

    def _open(self) -> EmbeddedDB:
        db = open_db(self.name)
        try:
            db.ensure(self.tables)
        except BaseException:
            db.close()
            raise
        return db

    @classmethod
    def from_target(cls, target: str, settings: Settings) -> EmbeddedBackend:
        """Open from a setting value (``sqlite:///...``); nothing else in ``settings`` applies."""
        return cls(target)

    @property
    def db(self) -> EmbeddedDB:
        if self._closed:
            raise BackendError(f"{type(self).__name__} on {self.name} is closed")
        if self._db.pid != os.getpid():
            self._db = self._open()
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
            self._db = self._open()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
