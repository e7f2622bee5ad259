"""The embedded event log: the ``log`` table of the SQLite file (see ``eventlog.embedded``).

Positions are the table's AUTOINCREMENT row ids as decimal strings. Appends take
the write lock (``BEGIN IMMEDIATE``), so positions are committed in increasing
order: a reader never sees position n+1 while n is still to come. That is what
makes the offsets below simple.

Local consumer API (for the local worker)
-----------------------------------------
One process, one consumer::

    after = log.committed("worker")            # int | None: last handled position
    for rec in log.read(None if after is None else str(after), 100):
        handle(rec)
        log.commit("worker", int(rec.position))  # never moves backwards

Several processes cooperating on one file (every record handled at least once,
exactly once when nobody crashes)::

    while True:
        claimed = log.claim_batch("worker", owner=my_id, limit=100, ttl_s=60)
        if claimed is None:
            ...  # nothing claimable now: the log is drained, or other workers hold the rest
            continue
        claim_id, records = claimed
        for rec in records:
            handle(rec)
        log.complete_claim(claim_id)

``claim_batch`` hands out, in one transaction, either the oldest claim whose
``ttl_s`` has run out without completion (its owner presumably died; the same
range goes to the new owner under a new claim id, and the old id's completion is
then ignored) or the next ``limit`` records after everything claimed so far.
Claims cover contiguous position ranges. ``complete_claim`` marks a claim done
and advances the consumer's committed offset over the completed prefix of
claims, so ``committed()`` never passes a record whose handling is unfinished,
and ``drained(consumer)`` says when everything up to the head is handled. A claim
re-claimed after expiry is always handed out whole, whatever ``limit`` says.
Do not mix ``commit`` and claims for the same consumer name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from eventlog.embedded import EmbeddedBackend, Tables
from eventlog.errors import BackendError
from eventlog.log import LogRecord, OutRecord
from eventlog.settings import DEFAULT_SQLITE


def _position(value: str | int | None, what: str) -> int:
    if value is None:
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BackendError(f"{what} {value!r} is not a position of the embedded log (a decimal number)") from None
    if number < 0:
        raise BackendError(f"{what} {value!r} is not a position of the embedded log (negative)")
    return number


def _records(rows: Sequence[tuple[int, str, bytes]]) -> list[LogRecord]:
    return [LogRecord(str(position), key, bytes(data)) for position, key, data in rows]


TABLES = Tables("log", ((
    # AUTOINCREMENT: positions are never reused, even after deletes
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
),))


class SqliteLog(EmbeddedBackend):
    """EventLog + ReadableLog on the embedded file, plus consumer offsets and batch claims."""

    tables = TABLES

    def __init__(self, target: str = DEFAULT_SQLITE, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(target, clock=clock)

    # -- EventLog / ReadableLog ------------------------------------------------------------

    def append(self, records: Sequence[OutRecord]) -> list[str]:
        """Store every record in one transaction (all or none) and return their positions."""
        if not records:
            return []
        now = self.clock()
        with self.db.transaction() as conn:
            positions = [
                str(conn.execute("INSERT INTO log (key, data, time) VALUES (?, ?, ?)",
                                 (rec.key, bytes(rec.data), now)).lastrowid)
                for rec in records
            ]
        return positions

    def read(self, after: str | None, limit: int) -> list[LogRecord]:
        rows = self.db.execute(
            "SELECT position, key, data FROM log WHERE position > ? ORDER BY position LIMIT ?",
            (_position(after, "read after"), int(limit)),
        )
        return _records(rows)

    def read_key(self, key: str, after: str | None = None) -> list[LogRecord]:
        rows = self.db.execute(
            "SELECT position, key, data FROM log WHERE key = ? AND position > ? ORDER BY position",
            (key, _position(after, "read_key after")),
        )
        return _records(rows)

    def head(self) -> str | None:
        """The newest position, or ``None`` for an empty log."""
        value = self.db.execute("SELECT MAX(position) FROM log")[0][0]
        return None if value is None else str(value)

    # -- consumer offsets ------------------------------------------------------------------

    def committed(self, consumer: str) -> int | None:
        """The last position ``consumer`` has handled everything up to, or ``None`` if it never committed."""
        rows = self.db.execute("SELECT position FROM consumers WHERE name = ?", (consumer,))
        return int(rows[0][0]) if rows else None

    def commit(self, consumer: str, position: str | int) -> None:
        """Remember that ``consumer`` handled everything up to ``position``; an older position is ignored."""
        number = _position(position, "commit position")
        self.db.execute(
            "INSERT INTO consumers (name, position) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET position = MAX(position, excluded.position)",
            (consumer, number),
        )

    def drained(self, consumer: str) -> bool:
        """True when ``consumer`` has handled every record currently in the log."""
        # one statement reads one snapshot, without taking the write lock
        rows = self.db.execute(
            "SELECT COALESCE((SELECT position FROM consumers WHERE name = ?), 0) "
            ">= COALESCE((SELECT MAX(position) FROM log), 0)",
            (consumer,),
        )
        return bool(rows[0][0])

    # -- batch claims ----------------------------------------------------------------------

    def claim_batch(self, consumer: str, owner: str, limit: int, ttl_s: float) -> tuple[str, list[LogRecord]] | None:
        """Claim the next records for ``owner`` (see the module docstring), or ``None`` if none are claimable."""
        if limit < 1:
            raise ValueError("claim_batch limit must be at least 1")
        now = self.clock()
        with self.db.transaction() as conn:
            expired = conn.execute(
                "SELECT id, first, last FROM claims WHERE consumer = ? AND done = 0 AND expires <= ? "
                "ORDER BY first LIMIT 1",
                (consumer, now),
            ).fetchone()
            if expired is not None:
                old_id, first, last = expired
                conn.execute("DELETE FROM claims WHERE id = ?", (old_id,))
            else:
                row = conn.execute("SELECT position FROM consumers WHERE name = ?", (consumer,)).fetchone()
                committed = row[0] if row else 0
                frontier = conn.execute(
                    "SELECT COALESCE(MAX(last), 0) FROM claims WHERE consumer = ?", (consumer,)
                ).fetchone()[0]
                first = max(committed, frontier) + 1
                last = conn.execute(
                    "SELECT MAX(position) FROM (SELECT position FROM log WHERE position >= ? "
                    "ORDER BY position LIMIT ?)",
                    (first, int(limit)),
                ).fetchone()[0]
                if last is None:
                    return None
            claim_id = conn.execute(
                "INSERT INTO claims (consumer, owner, first, last, expires) VALUES (?, ?, ?, ?, ?)",
                (consumer, owner, first, last, now + ttl_s),
            ).lastrowid
            rows = conn.execute(
                "SELECT position, key, data FROM log WHERE position BETWEEN ? AND ? ORDER BY position",
                (first, last),
            ).fetchall()
        return str(claim_id), _records(rows)

    def complete_claim(self, claim_id: str) -> bool:
        """Mark a claim handled and advance the committed offset; False if the claim is no longer yours
        (it expired and was re-claimed, or was completed already)."""
        try:
            number = int(claim_id)
        except (TypeError, ValueError):
            return False
        with self.db.transaction() as conn:
            row = conn.execute("SELECT consumer FROM claims WHERE id = ? AND done = 0", (number,)).fetchone()
            if row is None:
                return False
            consumer = row[0]
            conn.execute("UPDATE claims SET done = 1 WHERE id = ?", (number,))
            found = conn.execute("SELECT position FROM consumers WHERE name = ?", (consumer,)).fetchone()
            committed = found[0] if found else 0
            advanced = committed
            for cid, first, last, done in conn.execute(
                "SELECT id, first, last, done FROM claims WHERE consumer = ? ORDER BY first", (consumer,)
            ).fetchall():
                if first > advanced + 1 or not done:
                    break
                advanced = max(advanced, last)
                conn.execute("DELETE FROM claims WHERE id = ?", (cid,))
            if advanced != committed:
                conn.execute(
                    "INSERT INTO consumers (name, position) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET position = MAX(position, excluded.position)",
                    (consumer, advanced),
                )
        return True
