"""Contract of Metrics: already-aggregated counters are accepted (and, where readable, accumulate)."""

from __future__ import annotations

import uuid

import pytest

from handlers.metrics import Datum, MetricBuffer, Metrics


def test_is_a_metrics_sink(metrics):
    assert isinstance(metrics, Metrics)


def test_put_accepts_aggregated_counters(metrics):
    name = f"handled_{uuid.uuid4().hex[:8]}"
    buffer = MetricBuffer()
    buffer.count(name, dimensions={"machine": "order"})
    buffer.count(name, dimensions={"machine": "order"})
    buffer.count(name, 3, dimensions={"machine": "refund", "state": "charged"})
    buffer.count(f"{name}_total")
    data = buffer.drain()
    assert len(data) == 3
    metrics.put(data)
    metrics.put([])
    if hasattr(metrics, "read"):
        totals = metrics.read()
        assert totals[(name, (("machine", "order"),))] == 2.0
        assert totals[(name, (("machine", "refund"), ("state", "charged")))] == 3.0
        assert totals[(f"{name}_total", ())] == 1.0


def test_readable_sinks_accumulate_across_puts(metrics):
    if not hasattr(metrics, "read"):
        pytest.skip("this sink cannot be read back")
    name = f"parked_{uuid.uuid4().hex[:8]}"
    dims = (("machine", "order"),)
    metrics.put([Datum(name, 2.0, dims)])
    metrics.put([Datum(name, 5.0, dims), Datum(name, 1.0, ())])
    totals = metrics.read()
    assert totals[(name, dims)] == 7.0
    assert totals[(name, ())] == 1.0
