"""The fault metrics reach CloudWatch (moto's server, over HTTP) with the dimensions an alarm names:
the scenarios of ``tests/unit/test_fault_metrics.py`` with CloudWatch as the metrics source."""

from __future__ import annotations

import datetime
import uuid

import pytest

from eventlog.failover import FailoverProxy
from tests.fixtures.servers import ACCOUNT, REGION
from tests.unit import test_fault_metrics as scenario
from tests.unit.engine_rig import Rig

pytestmark = pytest.mark.integration


def read(cw, namespace: str, name: str, dims: dict[str, str], stat: str = "Sum") -> float | None:
    now = datetime.datetime.now(datetime.timezone.utc)
    got = cw.get_metric_statistics(
        Namespace=namespace, MetricName=name, Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
        StartTime=now - datetime.timedelta(hours=1), EndTime=now + datetime.timedelta(hours=1), Period=7200,
        Statistics=[stat])["Datapoints"]
    return sum(p[stat] for p in got) if stat == "Sum" and got else (max(p[stat] for p in got) if got else None)


def test_fault_metrics_reach_cloudwatch_with_their_dimensions(moto_server, tmp_path):
    import boto3

    namespace = f"fsmlog-faults-{uuid.uuid4().hex[:8]}"
    arn = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:namespace/{namespace}"
    rig = Rig(tmp_path, [scenario.one_step("m", "quick"), scenario.one_step("slow", "outlasts_lease")],
              PRIMARY_METRICS_SOURCE=arn, METRICS_NAMESPACE=namespace, ENDPOINTS={arn: moto_server},
              SECONDARY_STREAM_SOURCE=f"sqlite:///{tmp_path}/second.db", FAILOVER_COOLDOWN_SECONDS=30)
    try:
        # a failover of the stream, then its primary answering again
        pair = rig.services.log
        assert isinstance(pair, FailoverProxy)
        pair.primary = scenario.Flaky(pair.primary)
        pair._clock = rig.clock
        pair.primary.down = True
        rig.engine.start("m")
        pair.primary.down = False
        rig.clock.t += 31
        rig.engine.start("m")
        # a step delivered twice in its batch, then again once it completed; the oldest record's age
        rig.clock.t += 2.0
        batch = rig.next_batch()  # the primary's record (the first start went to the secondary)
        rig.engine.handle(batch + batch)
        rig.engine.handle(batch)
        # a lease lost to an expired holder
        rig.engine.keep_leases_in_thread = False
        rig.services.cache.clock = rig.clock
        scenario.ACTS.update(clock=rig.clock, lease_s=rig.settings.LEASE_SECONDS,
                             rival=rig.make_engine(worker_id="rival"))
        rig.engine.start("slow")
        rig.engine.handle(rig.next_batch())
    finally:
        rig.close()

    cw = boto3.client("cloudwatch", region_name=REGION, endpoint_url=moto_server)
    assert read(cw, namespace, "Failovers", {"source": "STREAM"}) == 1.0
    assert read(cw, namespace, "PrimaryRecovered", {"source": "STREAM"}) == 1.0
    assert read(cw, namespace, "DuplicateDeliveries", {"machine": "m"}) == 1.0
    assert read(cw, namespace, "StepsSkippedAsDone", {"machine": "m"}) == 1.0
    assert read(cw, namespace, "LeaseLost", {"machine": "slow", "side": "primary"}) == 1.0
    assert read(cw, namespace, "OldestRecordAgeMs", {}, "Maximum") == 2000.0
    names = {m["MetricName"] for m in cw.list_metrics(Namespace=namespace)["Metrics"]}
    assert {"Failovers", "PrimaryRecovered", "LeaseLost", "StepsSkippedAsDone", "DuplicateDeliveries",
            "OldestRecordAgeMs"} <= names
