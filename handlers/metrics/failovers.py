"""Failovers and recoveries of every primary/secondary pair, counted into the engine's metrics.

The pairs live in ``eventlog`` (``eventlog.failover.SidePair``), below the metrics sink, so they
only count, under the lock their routing already takes. ``watch`` finds the pairs among a set of
services; the engine moves what each counted since it was last asked into its ``MetricBuffer``
when it flushes, once per batch: nothing more is paid per call or per record, and an engine
built again over the same services counts nothing twice (the pair remembers what was taken).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from eventlog.failover import SidePair

from . import MetricBuffer


class FailoverCounts:
    """The source pairs of a set of services, read at each flush."""

    def __init__(self, pairs: Sequence[SidePair]) -> None:
        self.pairs = tuple(pairs)

    def drain_into(self, buffer: MetricBuffer) -> None:
        """Count ``Failovers`` and ``PrimaryRecovered`` (by source kind) since the last drain."""
        for pair in self.pairs:
            failovers, recoveries = pair.take_counts()
            if failovers:
                buffer.count("Failovers", failovers, {"source": pair.kind})
            if recoveries:
                buffer.count("PrimaryRecovered", recoveries, {"source": pair.kind})


def watch(sources: Iterable[Any]) -> FailoverCounts:
    """The counts of every pair among ``sources`` (sources without a secondary are not pairs)."""
    return FailoverCounts([s for s in sources if isinstance(s, SidePair)])
