"""What ``fsmlog status`` says about faults: the embedded sink's per-minute counts read back for
the last hour, summed over dimensions, in one line that fits 80 columns."""

from __future__ import annotations

from fsmlog.cli.health import fault_health, health_line
from handlers.metrics import Datum
from handlers.metrics.sqlite import SqliteMetrics


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_the_last_hour_of_failovers_and_lost_leases_is_read_back(tmp_path):
    clock = Clock(1_000_000.0)
    metrics = SqliteMetrics(f"sqlite:///{tmp_path}/m.db", clock=clock)
    try:
        metrics.put([Datum("Failovers", 5, (("source", "CACHE"),))])  # two hours ago: outside the window
        clock.t += 7200
        metrics.put([Datum("Failovers", 2, (("source", "STREAM"),)), Datum("Failovers", 1, (("source", "CACHE"),)),
                     Datum("LeaseLost", 1, (("machine", "order"), ("side", "primary"))),
                     Datum("OldestRecordAgeMs", 800, (), "Milliseconds")])
        clock.t += 60
        metrics.put([Datum("LeaseLost", 2, (("machine", "refund"), ("side", "secondary"))),
                     Datum("OldestRecordAgeMs", 300, (), "Milliseconds")])
        since = metrics.since(clock.t - 3600)
        assert since[("OldestRecordAgeMs", ())] == 800.0  # a gauge: the greatest, not the sum
        health = fault_health(metrics, now=clock.t)
        assert health == {"window_s": 3600.0, "failovers": 3, "failovers_by_source": {"CACHE": 1, "STREAM": 2},
                          "lease_lost": 3}
        line = health_line(health, metrics.name)
        assert line == "health (last hour): 3 failover(s) (CACHE 1, STREAM 2), 3 lease(s) lost"
        assert metrics.read()[("Failovers", (("source", "CACHE"),))] == 6.0  # the totals keep everything
        assert metrics.read()[("OldestRecordAgeMs", ())] == 800.0
    finally:
        metrics.close()


def test_a_sink_that_cannot_be_read_back_says_so_and_names_the_alarms():
    class Emf:
        name = "emf:"

        def put(self, data):
            pass

    assert fault_health(Emf()) is None
    line = health_line(None, "arn:aws:cloudwatch:us-east-1:123456789012:namespace/a-rather-long-name")
    assert line == "health: CloudWatch is not readable here; alarm on Failovers and LeaseLost"
    assert health_line(None, "emf:shop") == "health: EMF is not readable here; alarm on Failovers and LeaseLost"
