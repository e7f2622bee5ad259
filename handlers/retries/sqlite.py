"""Retries in the embedded SQLite file (``retries`` table, see ``eventlog.embedded``).

``due`` is a claim: the rows it returns get ``claimed_until = now + claim_s`` in the
same transaction, so two workers polling at once never take the same retry. A
worker that dies before ``done`` loses nothing: once the claim runs out the
retry is due again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from eventlog.embedded import EmbeddedBackend, Tables
from eventlog.settings import DEFAULT_SQLITE

from . import DueRetry, ScheduledRetry

CLAIM_SECONDS = 60.0


TABLES = Tables("retries", ((
    """CREATE TABLE IF NOT EXISTS retries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL,
        data BLOB NOT NULL,
        due REAL NOT NULL,
        claimed_until REAL NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS retries_due ON retries (due)",
),))


class SqliteRetries(EmbeddedBackend):
    tables = TABLES

    def __init__(self, target: str = DEFAULT_SQLITE, *, clock: Callable[[], float] = time.time,
                 claim_s: float = CLAIM_SECONDS) -> None:
        super().__init__(target, clock=clock)
        self.claim_s = claim_s

    def schedule(self, retries: Sequence[ScheduledRetry]) -> None:
        if not retries:
            return
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO retries (key, data, due) VALUES (?, ?, ?)",
                [(r.key, bytes(r.data), float(r.due)) for r in retries],
            )

    def due(self, now: float, limit: int) -> list[DueRetry]:
        """Claim up to ``limit`` retries whose time has come and that nobody holds, oldest due first."""
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT id, data, due FROM retries WHERE due <= ? AND claimed_until <= ? ORDER BY due, id LIMIT ?",
                (now, now, int(limit)),
            ).fetchall()
            if rows:
                conn.executemany(
                    "UPDATE retries SET claimed_until = ? WHERE id = ?",
                    [(now + self.claim_s, rid) for rid, _, _ in rows],
                )
        return [DueRetry(str(rid), bytes(data), float(due)) for rid, data, due in rows]

    def done(self, handles: Sequence[str]) -> None:
        ids = [int(h) for h in handles if str(h).isdigit()]
        if not ids:
            return
        with self.db.transaction() as conn:
            conn.executemany("DELETE FROM retries WHERE id = ?", [(i,) for i in ids])

    def pending(self) -> int:
        """How many retries wait (claimed or not), for the CLI and tests."""
        return int(self.db.execute("SELECT COUNT(*) FROM retries")[0][0])

    def scheduled(self) -> list[ScheduledRetry]:
        """Every waiting record (claimed or not) with its due time, earliest first, for the CLI."""
        rows = self.db.execute("SELECT key, data, due FROM retries ORDER BY due, id")
        return [ScheduledRetry(str(key), bytes(data), float(due)) for key, data, due in rows]

    def next_due(self) -> float | None:
        """When the earliest waiting retry is due (epoch seconds; None when none waits), for the CLI."""
        return self.db.execute("SELECT MIN(due) FROM retries")[0][0]
