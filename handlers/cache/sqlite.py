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

    def begin_step(self, cid: str, steps: int, owner: str, ttl_s: float) -> tuple[int | None, bool, bool]:
        """The step gate in one transaction: take ``lease:<cid>`` and read the step's done flag and the
        machine's abort flag (see ``handlers.gate``)."""
        return self.begin_steps([(cid, steps)], owner, ttl_s)[0]

    def end_step(self, cid: str, steps: int, owner: str, token: int, done: bool, dedupe_s: float) -> None:
        """Mark the step done (when it is) and release the lease, in one transaction."""
        self.end_steps([(cid, steps, token, done)], owner, dedupe_s)

    def begin_steps(self, items: list[tuple[str, int]], owner: str, ttl_s: float) -> list[tuple[int | None, bool, bool]]:
        """``begin_step`` for every ``(cid, steps)`` of a batch, in one transaction."""
        now = self.clock()
        out: list[tuple[int | None, bool, bool]] = []
        with self.db.transaction() as conn:
            for cid, steps in items:
                token = self._take_lease(conn, f"lease:{cid}", owner, ttl_s, now)
                if token is None:
                    out.append((None, False, False))
                    continue
                flags = {row[0] for row in conn.execute(
                    "SELECT key FROM flags WHERE key IN (?, ?) AND expires > ?",
                    (f"done:{cid}:{steps}", f"abort:{cid}", now),
                )}
                out.append((token, f"done:{cid}:{steps}" in flags, f"abort:{cid}" in flags))
        return out

    def end_steps(self, items: list[tuple[str, int, int, bool]], owner: str, dedupe_s: float) -> None:
        """``end_step`` for every ``(cid, steps, token, done)`` of a batch, in one transaction."""
        now = self.clock()
        with self.db.transaction() as conn:
            for cid, steps, token, done in items:
                if done:
                    key = f"done:{cid}:{steps}"
                    conn.execute("DELETE FROM flags WHERE key = ? AND expires <= ?", (key, now))
                    conn.execute("INSERT OR IGNORE INTO flags (key, expires) VALUES (?, ?)", (key, now + dedupe_s))
                conn.execute("DELETE FROM leases WHERE key = ? AND owner = ? AND token = ?",
                             (f"lease:{cid}", owner, int(token)))

    def abort_machine(self, cid: str, dedupe_s: float) -> None:
        self.mark(f"abort:{cid}", dedupe_s)

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
        return gone
