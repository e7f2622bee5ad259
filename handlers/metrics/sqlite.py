"""Metrics in the embedded SQLite file: counters accumulate per (name, dimensions).

There is no CloudWatch locally, so the totals are kept where ``fsmlog`` tools
(and tests) can read them back with ``read()``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from eventlog.embedded import EmbeddedBackend

from . import Datum

Dimensions = tuple[tuple[str, str], ...]


def _encode(dimensions: Dimensions) -> str:
    return json.dumps(sorted([str(k), str(v)] for k, v in dimensions), separators=(",", ":"))


def _decode(text: str) -> Dimensions:
    return tuple((k, v) for k, v in json.loads(text))


class SqliteMetrics(EmbeddedBackend):
    def put(self, data: Sequence[Datum]) -> None:
        if not data:
            return
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO metrics (name, dimensions, value) VALUES (?, ?, ?) "
                "ON CONFLICT (name, dimensions) DO UPDATE SET value = value + excluded.value",
                [(d.name, _encode(d.dimensions), float(d.value)) for d in data],
            )

    def read(self) -> dict[tuple[str, Dimensions], float]:
        """Every counter's total, keyed like ``MetricBuffer``: ``(name, sorted dimension pairs)``."""
        rows = self.db.execute("SELECT name, dimensions, value FROM metrics ORDER BY name, dimensions")
        return {(name, _decode(dims)): float(value) for name, dims, value in rows}
