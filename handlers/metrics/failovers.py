"""Failovers and recoveries of every primary/secondary pair, counted into the engine's metrics.

The pairs live in ``eventlog`` (``eventlog.failover.SidePair``), below the metrics sink, so they
only tell observers. ``watch`` registers one ``FailoverCounts`` per set of services (an engine
built again over the same services shares it, so nothing is counted twice); the engine moves
its counts into its ``MetricBuffer`` when it flushes, once per batch.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from eventlog.failover import FAILOVER, FailoverEvent, SidePair

from . import MetricBuffer

METRIC = {FAILOVER: "Failovers"}  # and RECOVERED: "PrimaryRecovered"


class FailoverCounts:
    """A ``FailoverObserver``: counts per (metric, source kind) until drained."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def __call__(self, event: FailoverEvent) -> None:
        name = METRIC.get(event.what, "PrimaryRecovered")
        with self._lock:
            self._counts[(name, event.kind)] += 1

    def drain_into(self, buffer: MetricBuffer) -> None:
        with self._lock:
            counts, self._counts = self._counts, Counter()
        for (name, kind), n in counts.items():
            buffer.count(name, n, {"source": kind})


def watch(sources: Iterable[Any]) -> FailoverCounts:
    """The counter observing every pair among ``sources`` (one per pair set: reused if there)."""
    pairs = [s for s in sources if isinstance(s, SidePair)]
    counts = next((o for p in pairs for o in p.observers if isinstance(o, FailoverCounts)), None)
    if counts is None:
        counts = FailoverCounts()
    for pair in pairs:
        pair.observe(counts)
    return counts
