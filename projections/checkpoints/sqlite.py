"""Checkpoints in the embedded SQLite file (``checkpoints`` table, see ``eventlog.embedded``)."""

from __future__ import annotations

from eventlog.embedded import EmbeddedBackend, Tables

TABLES = Tables("checkpoints", ((
    """CREATE TABLE IF NOT EXISTS checkpoints (
        cid TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        data BLOB NOT NULL,
        time REAL NOT NULL)""",
),))


class SqliteCheckpoints(EmbeddedBackend):
    """Snapshots by correlation id; a save with a version not greater than the stored one is refused."""

    tables = TABLES

    def save(self, correlation_id: str, version: int, data: bytes) -> bool:
        # One upsert statement is atomic: the version comparison and the write cannot interleave
        # with another process's save.
        with self.db.transaction() as conn:
            changed = conn.execute(
                "INSERT INTO checkpoints (cid, version, data, time) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (cid) DO UPDATE SET version = excluded.version, data = excluded.data, "
                "time = excluded.time WHERE excluded.version > checkpoints.version",
                (correlation_id, int(version), bytes(data), self.clock()),
            ).rowcount
        return changed == 1

    def save_many(self, items: list[tuple[str, int, bytes]]) -> list[bool]:
        """Every snapshot of a batch in one transaction."""
        now = self.clock()
        with self.db.transaction() as conn:
            return [conn.execute(
                "INSERT INTO checkpoints (cid, version, data, time) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (cid) DO UPDATE SET version = excluded.version, data = excluded.data, "
                "time = excluded.time WHERE excluded.version > checkpoints.version",
                (cid, int(version), bytes(data), now),
            ).rowcount == 1 for cid, version, data in items]

    def load(self, correlation_id: str) -> bytes | None:
        rows = self.db.execute("SELECT data FROM checkpoints WHERE cid = ?", (correlation_id,))
        return bytes(rows[0][0]) if rows else None

    def version(self, correlation_id: str) -> int | None:
        """The stored snapshot's version (for tools and tests), or ``None``."""
        rows = self.db.execute("SELECT version FROM checkpoints WHERE cid = ?", (correlation_id,))
        return int(rows[0][0]) if rows else None
