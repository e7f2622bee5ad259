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

import time
from collections.abc import Callable

from eventlog.embedded import EmbeddedBackend
from eventlog.settings import DEFAULT_SQLITE

PURGE_EVERY = 1024  # marks between sweeps of expired flags and leases


class SqliteCache(EmbeddedBackend):
    def __init__(self, target: str = DEFAULT_SQLITE, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(target, clock=clock)
        self._marks = 0

    def acquire(self, key: str, owner: str, ttl_s: float) -> int | None:
        with self.db.transaction() as conn:
            return self._take_lease(conn, key, owner, ttl_s, self.clock())

    @staticmethod
    def _take_lease(conn, key: str, owner: str, ttl_s: float, now: float) -> int | None:
        """Inside a transaction: the lease with a new fence token, or None while another owner holds it."""
        held = conn.execute("SELECT owner, expires FROM leases WHERE key = ?", (key,)).fetchone()
        if held is not None and held[0] != owner and held[1] > now:
            return None
        # (no RETURNING: it needs SQLite 3.35, newer than some distributions' Python ships)
        conn.execute(
            "INSERT INTO fence (key, token) VALUES (?, 1) ON CONFLICT (key) DO UPDATE SET token = token + 1",
            (key,),
        )
        token = conn.execute("SELECT token FROM fence WHERE key = ?", (key,)).fetchone()[0]
        conn.execute(
            "INSERT INTO leases (key, owner, token, expires) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, token = excluded.token, "
            "expires = excluded.expires",
            (key, owner, token, now + ttl_s),
        )
        return int(token)

    # -- the step gate's fast path (see handlers.gate): one transaction per call, or per batch ----------

    def begin_step(self, cid: str, ordinal: int, owner: str, ttl_s: float) -> tuple[int | None, bool, bool]:
        """Take ``lease:<cid>`` and say whether the attempt was handled already and whether the
        machine is aborted, in one transaction."""
        return self.begin_steps([(cid, ordinal)], owner, ttl_s)[0]

    def end_step(self, cid: str, ordinal: int, owner: str, token: int, mark: bool, dedupe_s: float) -> None:
        """Raise the machine's handled mark to ``ordinal`` (when ``mark``) and release the lease."""
        self.end_steps([(cid, ordinal, token, mark)], owner, dedupe_s)

    def begin_steps(self, items: list[tuple[str, int]], owner: str, ttl_s: float) -> list[tuple[int | None, bool, bool]]:
        """``begin_step`` for every ``(cid, ordinal)`` of a batch, in one transaction."""
        now = self.clock()
        out: list[tuple[int | None, bool, bool]] = []
        with self.db.transaction() as conn:
            for cid, ordinal in items:
                token = self._take_lease(conn, f"lease:{cid}", owner, ttl_s, now)
                if token is None:
                    out.append((None, False, False))
                    continue
                row = conn.execute("SELECT done, done_expires, aborted_expires FROM progress WHERE cid = ?",
                                   (cid,)).fetchone()
                done = row is not None and row[1] > now and ordinal <= row[0]
                out.append((token, done, row is not None and row[2] > now))
        return out

    def end_steps(self, items: list[tuple[str, int, int, bool]], owner: str, dedupe_s: float) -> None:
        """``end_step`` for every ``(cid, ordinal, token, mark)`` of a batch, in one transaction.

        The mark is raised even when the lease was lost meanwhile: the attempt's record is in the
        log, so a copy of it must not run again; the lease is released only by its holder.
        """
        now = self.clock()
        with self.db.transaction() as conn:
            for cid, ordinal, token, mark in items:
                if mark:
                    conn.execute(
                        "INSERT INTO progress (cid, done, done_expires, aborted_expires) VALUES (?, ?, ?, 0) "
                        "ON CONFLICT (cid) DO UPDATE SET "
                        "done = CASE WHEN progress.done_expires <= ? THEN excluded.done "
                        "ELSE max(progress.done, excluded.done) END, done_expires = excluded.done_expires",
                        (cid, int(ordinal), now + dedupe_s, now),
                    )
                conn.execute("DELETE FROM leases WHERE key = ? AND owner = ? AND token = ?",
                             (f"lease:{cid}", owner, int(token)))
        before, self._marks = self._marks, self._marks + len(items)
        if before // PURGE_EVERY != self._marks // PURGE_EVERY:
            self.purge_expired()

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
