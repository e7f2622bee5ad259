"""Leases and idempotency flags in the embedded SQLite file (see ``eventlog.embedded``).

Leases live in ``leases``; their fence counter lives apart in ``fence`` and is
never deleted, so a token handed out for a key is greater than every token
handed out for it before, across releases, expiries and owners.

Re-entrant acquire: when the holder acquires again it gets a NEW, larger token
(and a fresh expiry). That keeps one rule for every acquisition ("a token is
never handed out twice") and is safe: the old token stops being current, so a
``release`` with it is ignored, exactly as for any stale holder.

Times come from ``clock`` (``time.time`` unless injected for tests). A lease is
held while ``expires > now``; a flag is set while ``expires > now``, and an
expired flag may be set again.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence

from eventlog.embedded import EmbeddedBackend, Tables
from eventlog.settings import DEFAULT_SQLITE

from .steps import Ending, StepKey, StepView

PURGE_EVERY = 1024  # marks between sweeps of expired flags and leases


TABLES = Tables("cache", ((
    "CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, owner TEXT NOT NULL, token INTEGER NOT NULL, "
    "expires REAL NOT NULL)",
    # the fence counter outlives its lease so tokens increase forever
    "CREATE TABLE IF NOT EXISTS fence (key TEXT PRIMARY KEY, token INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS flags (key TEXT PRIMARY KEY, expires REAL NOT NULL)",
    # high-water marks of handled step attempts, per machine
    "CREATE TABLE IF NOT EXISTS progress (cid TEXT PRIMARY KEY, done INTEGER NOT NULL, "
    "done_expires REAL NOT NULL, aborted_expires REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS flags_expires ON flags (expires)",
),))


class SqliteCache(EmbeddedBackend):
    tables = TABLES

    def __init__(self, target: str = DEFAULT_SQLITE, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(target, clock=clock)
        self._marks = 0

    def acquire(self, key: str, owner: str, ttl_s: float, floor: int = 0) -> int | None:
        with self.db.transaction() as conn:
            return self._take_lease(conn, key, owner, ttl_s, self.clock(), floor)

    @staticmethod
    def _take_lease(conn: sqlite3.Connection, key: str, owner: str, ttl_s: float, now: float, floor: int = 0) -> int | None:
        """Inside a transaction: the lease with a new fence token (at least ``floor``), or None while
        another owner holds it."""
        held = conn.execute("SELECT owner, expires FROM leases WHERE key = ?", (key,)).fetchone()
        if held is not None and held[0] != owner and held[1] > now:
            return None
        # (no RETURNING: it needs SQLite 3.35, newer than some distributions' Python ships)
        conn.execute(
            "INSERT INTO fence (key, token) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
            "token = max(token + 1, excluded.token)",
            (key, max(1, int(floor))),
        )
        token = conn.execute("SELECT token FROM fence WHERE key = ?", (key,)).fetchone()[0]
        conn.execute(
            "INSERT INTO leases (key, owner, token, expires) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, token = excluded.token, "
            "expires = excluded.expires",
            (key, owner, token, now + ttl_s),
        )
        return int(token)

    # -- the step gate's store (see handlers.cache.steps): one transaction per batch ----------------

    def begin_steps(self, items: Sequence[StepKey], owner: str, ttl_s: float) -> list[StepView]:
        now = self.clock()
        out: list[StepView] = []
        with self.db.transaction() as conn:
            for key in items:
                token = self._take_lease(conn, f"lease:{key.cid}", owner, ttl_s, now, key.floor)
                if token is None:
                    out.append(StepView(None, None, False))
                    continue
                mark, aborted = self._progress(conn, key.cid, now)
                out.append(StepView(token, mark, aborted))
        return out

    @staticmethod
    def _progress(conn: sqlite3.Connection, cid: str, now: float) -> tuple[int | None, bool]:
        row = conn.execute("SELECT done, done_expires, aborted_expires FROM progress WHERE cid = ?",
                           (cid,)).fetchone()
        if row is None:
            return None, False
        mark = int(row[0]) if row[1] > now else None  # -1: known, nothing handled (a registered start)
        return mark, row[2] > now

    def peek_steps(self, items: Sequence[StepKey]) -> list[StepView]:
        now = self.clock()
        with self.db.transaction() as conn:
            return [StepView(None, *self._progress(conn, key.cid, now)) for key in items]

    def end_steps(self, items: Sequence[Ending], owner: str, dedupe_s: float) -> None:
        """Marks first, then releases, in one transaction.

        The mark is raised even when the lease was lost meanwhile: the attempt's record is in the
        log, so a copy of it must not run again; the lease is released only by its holder.
        """
        now = self.clock()
        with self.db.transaction() as conn:
            for e in items:
                if e.mark is not None:
                    conn.execute(
                        "INSERT INTO progress (cid, done, done_expires, aborted_expires) VALUES (?, ?, ?, 0) "
                        "ON CONFLICT (cid) DO UPDATE SET "
                        "done = CASE WHEN progress.done_expires <= ? THEN excluded.done "
                        "ELSE max(progress.done, excluded.done) END, done_expires = excluded.done_expires",
                        (e.cid, e.handled_upto(), now + dedupe_s, now),
                    )
                if e.token is not None:
                    conn.execute("DELETE FROM leases WHERE key = ? AND owner = ? AND token = ?",
                                 (f"lease:{e.cid}", owner, int(e.token)))
        before, self._marks = self._marks, self._marks + len(items)
        if before // PURGE_EVERY != self._marks // PURGE_EVERY:
            self.purge_expired()

    def renew_leases(self, items: Sequence[tuple[str, int]], owner: str, ttl_s: float) -> list[bool]:
        now = self.clock()
        with self.db.transaction() as conn:
            return [self._keep(conn, f"lease:{cid}", owner, token, now + ttl_s) for cid, token in items]

    def check_leases(self, items: Sequence[tuple[str, int]], owner: str, ttl_s: float) -> list[bool]:
        with self.db.transaction() as conn:
            return [(row := conn.execute("SELECT token FROM fence WHERE key = ?", (f"lease:{cid}",)).fetchone())
                    is not None and int(row[0]) == int(token) for cid, token in items]

    def extend(self, key: str, owner: str, token: int, ttl_s: float) -> bool:
        with self.db.transaction() as conn:
            return self._keep(conn, key, owner, token, self.clock() + ttl_s)

    @staticmethod
    def _keep(conn: sqlite3.Connection, key: str, owner: str, token: int, expires: float) -> bool:
        """Renew the lease while no acquisition came after ours (the fence counter still equals our
        token), even if it ran out meanwhile: nobody else can have held it in between."""
        if conn.execute("UPDATE leases SET expires = ? WHERE key = ? AND owner = ? AND token = ? AND token = "
                        "(SELECT token FROM fence WHERE key = ?)", (expires, key, owner, int(token), key)).rowcount:
            return True  # the common case, one statement: our row is still there
        row = conn.execute("SELECT token FROM fence WHERE key = ?", (key,)).fetchone()
        if row is None or int(row[0]) != int(token):
            return False
        conn.execute("INSERT INTO leases (key, owner, token, expires) VALUES (?, ?, ?, ?) ON CONFLICT (key) "
                     "DO UPDATE SET owner = excluded.owner, token = excluded.token, expires = excluded.expires",
                     (key, owner, int(token), expires))
        return True

    def abort_machine(self, cid: str, dedupe_s: float) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO progress (cid, done, done_expires, aborted_expires) VALUES (?, -1, 0, ?) "
                "ON CONFLICT (cid) DO UPDATE SET aborted_expires = excluded.aborted_expires",
                (cid, self.clock() + dedupe_s),
            )

    def release(self, key: str, owner: str, token: int) -> None:
        self.db.execute("DELETE FROM leases WHERE key = ? AND owner = ? AND token = ?", (key, owner, int(token)))

    def holder(self, key: str) -> tuple[str, int] | None:
        """``(owner, token)`` of the unexpired lease on ``key``, or ``None`` (for tools and tests)."""
        rows = self.db.execute("SELECT owner, token FROM leases WHERE key = ? AND expires > ?", (key, self.clock()))
        return (rows[0][0], int(rows[0][1])) if rows else None

    def mark(self, key: str, ttl_s: float) -> bool:
        now = self.clock()
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM flags WHERE key = ? AND expires <= ?", (key, now))
            added = conn.execute(
                "INSERT OR IGNORE INTO flags (key, expires) VALUES (?, ?)", (key, now + ttl_s)
            ).rowcount
        self._marks += 1
        if self._marks % PURGE_EVERY == 0:
            self.purge_expired()
        return added == 1

    def marked(self, key: str) -> bool:
        return bool(self.db.execute("SELECT 1 FROM flags WHERE key = ? AND expires > ?", (key, self.clock())))

    def purge_expired(self) -> int:
        """Delete expired flags and leases (fence counters stay); returns how many rows went."""
        now = self.clock()
        with self.db.transaction() as conn:
            gone = conn.execute("DELETE FROM flags WHERE expires <= ?", (now,)).rowcount
            gone += conn.execute("DELETE FROM leases WHERE expires <= ?", (now,)).rowcount
            gone += conn.execute("DELETE FROM progress WHERE done_expires <= ? AND aborted_expires <= ?",
                                 (now, now)).rowcount
        return gone
