"""The overview's per-minute series read back from CloudWatch, where the metrics go on AWS.

The engine counts ``Transitions``, ``MachinesFailed``, ``StepsRetried`` and
``PoisonRecords`` with a ``machine`` dimension; each series is the per-minute
sum over every dimension set ``ListMetrics`` finds (no SEARCH expression, so
it works on emulators too). Other metrics sources (the embedded file keeps
totals, EMF lines are not read back) give ``None`` and the overview counts
the log instead.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

from eventlog.settings import Settings

SERIES_METRICS = {"transitions": "Transitions", "failures": "MachinesFailed", "retries": "StepsRetried",
                  "parked": "PoisonRecords"}
QUERIES_PER_CALL = 500  # GetMetricData's limit


def cloudwatch_arn(metrics: object) -> str | None:
    """The CloudWatch ARN behind a metrics source (the primary of a failover pair), or None."""
    from eventlog.failover import CircuitPair
    from handlers.metrics.cloudwatch import CloudWatchMetrics

    while isinstance(metrics, CircuitPair):
        metrics = metrics.primary
    return metrics.arn if isinstance(metrics, CloudWatchMetrics) else None


def cloudwatch_series(metrics: Any, settings: Settings, start: float, minutes: int) -> dict[str, list[int]] | None:
    """``{series: [count per minute]}`` from ``start``, or None when the source is not CloudWatch."""
    arn = cloudwatch_arn(metrics)
    if arn is None:
        return None
    from eventlog.aws import client

    cw = client("cloudwatch", arn, settings)
    queries = _queries(cw, arn, str(settings.METRICS_NAMESPACE or "fsmlog"))
    series = {key: [0] * minutes for key in SERIES_METRICS}
    begin = datetime.datetime.fromtimestamp(start, datetime.timezone.utc)
    end = datetime.datetime.fromtimestamp(start + 60 * minutes, datetime.timezone.utc)
    by_id = {q["Id"]: key for key, q in queries}
    for i in range(0, len(queries), QUERIES_PER_CALL):
        batch = [q for _, q in queries[i:i + QUERIES_PER_CALL]]
        for page in _pages(cw.get_metric_data, arn, MetricDataQueries=batch, StartTime=begin, EndTime=end):
            for result in page.get("MetricDataResults", ()):
                values = series[by_id[result["Id"]]]
                for when, value in zip(result.get("Timestamps", ()), result.get("Values", ())):
                    slot = int((when.timestamp() - start) // 60)
                    if 0 <= slot < minutes:
                        values[slot] += int(round(value))
    return series


def _queries(cw: Any, arn: str, namespace: str) -> list[tuple[str, dict[str, Any]]]:
    """One per-minute Sum query per (series, dimension set) that ``ListMetrics`` finds."""
    queries: list[tuple[str, dict[str, Any]]] = []
    for key, name in SERIES_METRICS.items():
        for page in _pages(cw.list_metrics, arn, Namespace=namespace, MetricName=name):
            for metric in page.get("Metrics", ()):
                queries.append((key, {"Id": f"q{len(queries)}", "ReturnData": True, "MetricStat": {
                    "Metric": metric, "Period": 60, "Stat": "Sum"}}))
    return queries


def _pages(operation: Any, arn: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Every page of a CloudWatch call, following ``NextToken``."""
    from eventlog.aws import call

    token = None
    while True:
        page = call(operation, resource=arn, **params, **({"NextToken": token} if token else {}))
        yield page
        token = page.get("NextToken")
        if not token:
            return
