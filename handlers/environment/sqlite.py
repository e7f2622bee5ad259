"""Environment dicts by id in the embedded SQLite file (see ``eventlog.embedded``)."""

from __future__ import annotations

from eventlog.embedded import EmbeddedBackend, Tables

TABLES = Tables("environment", (
    ("CREATE TABLE IF NOT EXISTS environment (id TEXT PRIMARY KEY, data BLOB NOT NULL)",),
))


class SqliteEnvironment(EmbeddedBackend):
    tables = TABLES

    def put(self, env_id: str, data: bytes) -> None:
        self.db.execute(
            "INSERT INTO environment (id, data) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            (env_id, bytes(data)),
        )

    def get(self, env_id: str) -> bytes | None:
        rows = self.db.execute("SELECT data FROM environment WHERE id = ?", (env_id,))
        return bytes(rows[0][0]) if rows else None
