"""Dead letters in the embedded SQLite file (see ``eventlog.embedded``); raw bytes kept exactly."""

from __future__ import annotations

from eventlog.embedded import EmbeddedBackend, Tables

from . import DeadLetter, letter_id

_COLUMNS = "id, reason, source, position, data, time"


def _letter(row: tuple) -> DeadLetter:
    lid, reason, source, position, data, when = row
    return DeadLetter(lid, reason, source, position, bytes(data), float(when))


TABLES = Tables("dead_letters", ((
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        source TEXT NOT NULL,
        position TEXT NOT NULL,
        data BLOB NOT NULL,
        time REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS dead_letters_time ON dead_letters (time)",
),))


class SqliteDeadLetters(EmbeddedBackend):
    tables = TABLES

    def park(self, reason: str, source: str, position: str, data: bytes, time: float) -> str:
        lid = letter_id(source, str(position), data)
        self.db.execute(
            f"INSERT OR IGNORE INTO dead_letters ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (lid, reason, source, str(position), bytes(data), float(time)),
        )
        return lid

    def list(self, limit: int = 100) -> list[DeadLetter]:
        """Newest first (by parking time, then by insertion order)."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM dead_letters ORDER BY time DESC, rowid DESC LIMIT ?", (int(limit),)
        )
        return [_letter(r) for r in rows]

    def get(self, letter_id: str) -> DeadLetter | None:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM dead_letters WHERE id = ?", (letter_id,))
        return _letter(rows[0]) if rows else None

    def remove(self, letter_id: str) -> None:
        self.db.execute("DELETE FROM dead_letters WHERE id = ?", (letter_id,))
