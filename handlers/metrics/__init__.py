"""Metrics: counters the engine keeps, flushed once per batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol, runtime_checkable


class Datum(NamedTuple):
    name: str
    value: float
    dimensions: tuple[tuple[str, str], ...]  # sorted (name, value) pairs


@runtime_checkable
class Metrics(Protocol):
    name: str

    def put(self, data: Sequence[Datum]) -> None:
        """Send already-aggregated counters in as few calls as the service allows."""
        ...


class MetricBuffer:
    """Aggregates counts in memory so a batch costs one ``put``, not one per event."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def count(self, name: str, value: float = 1.0, dimensions: Mapping[str, str] | None = None) -> None:
        dims = tuple(sorted(dimensions.items())) if dimensions else ()
        k = (name, dims)
        self._counts[k] = self._counts.get(k, 0.0) + value

    def drain(self) -> list[Datum]:
        out = [Datum(n, v, d) for (n, d), v in self._counts.items()]
        self._counts.clear()
        return out

    def flush(self, sink: Metrics) -> None:
        """Send and clear the counts; if the sink fails, keep them for the next flush and re-raise.

        Counts are keyed by (name, dimensions), so what waits for a recovering sink stays as
        small as the set of metric names and machines.
        """
        data = self.drain()
        if not data:
            return
        try:
            sink.put(data)
        except BaseException:
            for d in data:
                self.count(d.name, d.value, dict(d.dimensions))
            raise
