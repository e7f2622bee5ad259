"""The one-line fault summary ``fsmlog status`` ends with: failovers and lost leases in the last hour.

Read back from the metrics sink where it can be (the embedded one keeps per-minute counts,
``SqliteMetrics.since``). CloudWatch and EMF cannot be read back here: the line says so and
names the metrics to alarm on instead.
"""

from __future__ import annotations

import time
from typing import Any

from eventlog.errors import BackendError
from handlers.metrics import Metrics, ReadableMetrics

WINDOW_S = 3600.0
ALARM_ON = ("Failovers", "LeaseLost")  # what README "Under faults" says to alarm on


def fault_health(metrics: Metrics, now: float | None = None) -> dict[str, Any] | None:
    """Failovers (per source kind) and lost leases in the last hour; None when the sink cannot be read."""
    if not isinstance(metrics, ReadableMetrics):
        return None
    try:
        totals = metrics.since((time.time() if now is None else now) - WINDOW_S)
    except BackendError as exc:
        return {"window_s": WINDOW_S, "error": str(exc)}
    by_source: dict[str, int] = {}
    lease_lost = 0
    for (name, dims), value in totals.items():
        if name == "Failovers":
            source = dict(dims).get("source", "?")
            by_source[source] = by_source.get(source, 0) + int(value)
        elif name == "LeaseLost":
            lease_lost += int(value)
    return {"window_s": WINDOW_S, "failovers": sum(by_source.values()), "failovers_by_source": by_source,
            "lease_lost": lease_lost}


def health_line(health: dict[str, Any] | None, sink: str) -> str:
    """At most 80 columns: ``health (last hour): 2 failovers (STREAM 2), 0 leases lost``."""
    if health is None:
        kind = "EMF" if sink.startswith("emf:") else "CloudWatch" if ":cloudwatch:" in sink else sink[:20]
        return f"health: {kind} is not readable here; alarm on {' and '.join(ALARM_ON)}"
    if "error" in health:
        return f"health: metrics unreadable ({health['error']})"[:80]
    line = f"health (last hour): {health['failovers']} failover(s)"
    if health["failovers_by_source"]:
        line += " (" + ", ".join(f"{k} {v}" for k, v in sorted(health["failovers_by_source"].items())) + ")"
    return f"{line}, {health['lease_lost']} lease(s) lost"
