"""CloudWatch metrics: already-aggregated counters sent with as few PutMetricData calls as allowed.

The setting value is any CloudWatch ARN (``arn:aws:cloudwatch:REGION:ACCOUNT:...``);
only its region (and its ``ENDPOINTS`` entry) is used. The namespace is the
``METRICS_NAMESPACE`` setting. One call carries up to 1000 metric data and
stays under the 1 MB request limit.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from eventlog.settings import Settings

from . import Datum

MAX_DATA_PER_CALL = 1000
MAX_BYTES_PER_CALL = 900 * 1024  # under PutMetricData's 1 MB request limit, leaving room for encoding
MAX_DIMENSIONS = 30


def _size(entry: dict[str, Any]) -> int:
    """A generous estimate of one datum's share of the request body (query-encoded)."""
    dims = entry.get("Dimensions", ())
    return 120 + 3 * (len(entry["MetricName"]) + sum(len(d["Name"]) + len(d["Value"]) + 60 for d in dims))


class CloudWatchMetrics:
    """Counters into CloudWatch; works as primary and, through failover, as secondary."""

    def __init__(self, arn: str, settings: Settings) -> None:
        from eventlog.aws import client, parse_arn

        parsed = parse_arn(arn, "METRICS_SOURCE")
        if parsed.service != "cloudwatch":
            from eventlog.errors import SettingsError

            raise SettingsError(f"metrics source {arn!r} is not a CloudWatch ARN (arn:aws:cloudwatch:REGION:ACCOUNT:...)")
        self.name = arn
        self.arn = arn
        self.namespace = str(settings.METRICS_NAMESPACE or "fsmlog")
        self._client = client("cloudwatch", arn, settings)

    @classmethod
    def from_target(cls, target: str, settings: Settings) -> CloudWatchMetrics:
        return cls(target, settings)

    def put(self, data: Sequence[Datum]) -> None:
        from eventlog.aws import call, chunks

        now = datetime.datetime.now(datetime.timezone.utc)
        entries = []
        for d in data:
            entry: dict[str, Any] = {"MetricName": d.name, "Value": float(d.value), "Unit": d.unit, "Timestamp": now}
            if d.dimensions:
                entry["Dimensions"] = [{"Name": k, "Value": v} for k, v in d.dimensions[:MAX_DIMENSIONS]]
            entries.append(entry)
        for group in chunks(entries, MAX_DATA_PER_CALL, size=_size, max_bytes=MAX_BYTES_PER_CALL):
            call(self._client.put_metric_data, resource=self.arn, Namespace=self.namespace, MetricData=group)
