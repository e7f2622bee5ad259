"""Metrics: counters (and a few gauges) the engine keeps, flushed once per batch.

A ``Datum`` in the unit ``Count`` is a counter: values of one (name, dimensions) add up.
Any other unit (``Milliseconds`` for the age of the oldest record a batch saw) is a gauge:
the greatest value is kept, in the buffer and in a sink that accumulates (the embedded one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

COUNT = "Count"
MILLISECONDS = "Milliseconds"


class Datum(NamedTuple):
    name: str
    value: float
    dimensions: tuple[tuple[str, str], ...]  # sorted (name, value) pairs
    unit: str = COUNT  # Count adds up; any other unit is a gauge whose greatest value is kept


@runtime_checkable
class Metrics(Protocol):
    name: str

    def put(self, data: Sequence[Datum]) -> None:
        """Send already-aggregated counters in as few calls as the service allows."""
        ...


@runtime_checkable
class ReadableMetrics(Metrics, Protocol):
    """A sink that can be read back (the embedded one), so ``fsmlog status`` can sum its last hour;
    CloudWatch and EMF cannot be read back from the CLI."""

    def since(self, t: float) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Per (name, dimensions), what was put from ``t`` on: counts summed, gauges at their greatest."""
        ...


def _dims(dimensions: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in dimensions.items())) if dimensions else ()


class MetricBuffer:
    """Aggregates counts in memory so a batch costs one ``put``, not one per event.

    The engine's thread alone counts into it, so counting takes no lock (it runs per record).
    What other threads meet (a failover in the lease renewer's call) is counted by the source
    pair itself and moved in at the flush (``handlers.metrics.failovers``)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, tuple[tuple[str, str], ...], str], float] = {}

    def count(self, name: str, value: float = 1.0, dimensions: Mapping[str, str] | None = None) -> None:
        k = (name, _dims(dimensions), COUNT)
        self._counts[k] = self._counts.get(k, 0.0) + value

    def gauge(self, name: str, value: float, dimensions: Mapping[str, str] | None = None,
              unit: str = MILLISECONDS) -> None:
        """Keep the greatest ``value`` seen until the next flush."""
        k = (name, _dims(dimensions), unit)
        self._counts[k] = max(self._counts.get(k, value), value)

    def drain(self) -> list[Datum]:
        counts, self._counts = self._counts, {}
        return [Datum(n, v, d, u) for (n, d, u), v in counts.items()]

    def put_back(self, data: Sequence[Datum]) -> None:
        """Data a sink did not take: counts add to what came since, gauges keep the greater value."""
        for d in data:
            if d.unit == COUNT:
                self.count(d.name, d.value, dict(d.dimensions))
            else:
                self.gauge(d.name, d.value, dict(d.dimensions), d.unit)

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
            self.put_back(data)
            raise
