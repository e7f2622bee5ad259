"""Metrics in the embedded SQLite file: counters accumulate per (name, dimensions).

There is no CloudWatch locally, so the totals are kept where ``fsmlog`` tools
(and tests) can read them back with ``read()``, and per minute for a day, so
``since(t)`` answers "how many failovers in the last hour" (``fsmlog status``).
Counts add up; a gauge (any unit but ``Count``) keeps its greatest value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from eventlog.embedded import EmbeddedBackend, Tables

from . import COUNT, Datum

MINUTE_S = 60
KEEP_MINUTES_S = 86_400  # per-minute rows older than a day are dropped (the totals stay)

Dimensions = tuple[tuple[str, str], ...]


def _encode(dimensions: Dimensions) -> str:
    return json.dumps(sorted([str(k), str(v)] for k, v in dimensions), separators=(",", ":"))


def _decode(text: str) -> Dimensions:
    return tuple((k, v) for k, v in json.loads(text))


TABLES = Tables("metrics", ((
    """CREATE TABLE IF NOT EXISTS metrics (
        name TEXT NOT NULL,
        dimensions TEXT NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (name, dimensions))""",
), (
    """CREATE TABLE IF NOT EXISTS metric_minutes (
        name TEXT NOT NULL,
        dimensions TEXT NOT NULL,
        minute INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (name, dimensions, minute))""",
    "CREATE INDEX IF NOT EXISTS metric_minutes_by_minute ON metric_minutes (minute)",
), (
    "ALTER TABLE metric_minutes ADD COLUMN unit TEXT NOT NULL DEFAULT 'Count'",  # a gauge keeps its greatest
)))

_ADD = "value + excluded.value"
_MAX = "max(value, excluded.value)"


class SqliteMetrics(EmbeddedBackend):
    tables = TABLES
    _pruned: int | None = None  # the minute this process last dropped old per-minute rows

    def put(self, data: Sequence[Datum]) -> None:
        if not data:
            return
        minute = int(self.clock() // MINUTE_S)
        with self.db.transaction() as conn:
            for merge, group in ((_ADD, [d for d in data if d.unit == COUNT]),
                                 (_MAX, [d for d in data if d.unit != COUNT])):
                if not group:
                    continue
                rows = [(d.name, _encode(d.dimensions), float(d.value)) for d in group]
                conn.executemany(
                    "INSERT INTO metrics (name, dimensions, value) VALUES (?, ?, ?) "
                    f"ON CONFLICT (name, dimensions) DO UPDATE SET value = {merge}", rows)
                conn.executemany(
                    "INSERT INTO metric_minutes (name, dimensions, minute, unit, value) VALUES (?, ?, ?, ?, ?) "
                    f"ON CONFLICT (name, dimensions, minute) DO UPDATE SET value = {merge}",
                    [(n, dims, minute, d.unit, v) for (n, dims, v), d in zip(rows, group)])
            if minute != self._pruned:  # once a minute per process
                conn.execute("DELETE FROM metric_minutes WHERE minute < ?",
                             (minute - KEEP_MINUTES_S // MINUTE_S,))
                self._pruned = minute

    def since(self, t: float) -> dict[tuple[str, Dimensions], float]:
        """Per (name, dimensions), what was put from ``t`` on (to the minute; a day back at most):
        counts summed, gauges at their greatest."""
        rows = self.db.execute(
            "SELECT name, dimensions, max(unit), sum(value), max(value) FROM metric_minutes WHERE minute >= ? "
            "GROUP BY name, dimensions ORDER BY name, dimensions", (int(t // MINUTE_S),))
        return {(name, _decode(dims)): float(total if unit == COUNT else top)
                for name, dims, unit, total, top in rows}

    def read(self) -> dict[tuple[str, Dimensions], float]:
        """Every counter's total, keyed like ``MetricBuffer``: ``(name, sorted dimension pairs)``."""
        rows = self.db.execute("SELECT name, dimensions, value FROM metrics ORDER BY name, dimensions")
        return {(name, _decode(dims)): float(value) for name, dims, value in rows}
