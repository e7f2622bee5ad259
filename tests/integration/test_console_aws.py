"""The console on AWS sources: Kinesis for the log, DynamoDB for snapshots and dead letters (moto over
real HTTP). The same API as on the embedded file: the list is a scan of the stream plus the snapshots,
one machine is rebuilt from its snapshot and shard tail, abort and redispatch append to Kinesis,
redrive moves a DynamoDB dead letter back onto the stream."""

from __future__ import annotations

import time

import pytest

from eventlog.codec import encode
from eventlog.event import COMPLETED, START, STEP, Event
from eventlog.log import OutRecord
from tests.fixtures.servers import ACCOUNT, REGION

pytestmark = pytest.mark.integration
pytest.importorskip("starlette", reason="the console extra is not installed")

TOKEN = "aws-console-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def console(aws_settings, moto_server, tmp_path):
    from dataclasses import replace

    from starlette.testclient import TestClient

    from fsmlog.cli import Runtime
    from fsmlog.console.app import LOOPBACK_HOSTS, create_app
    from handlers.engine import Engine
    from handlers.wiring import open_services
    from projections.definition import Definitions

    local = f"sqlite:///{tmp_path.resolve() / 'local.db'}"
    metrics = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:fsmlog-console"
    settings = replace(aws_settings, PRIMARY_CACHE_SOURCE=local, PRIMARY_METRICS_SOURCE=metrics,
                       ENDPOINTS={**aws_settings.ENDPOINTS, metrics: moto_server},
                       METRICS_NAMESPACE=f"fsmlog-console-{time.time_ns()}")
    services = open_services(settings)
    engine = Engine(Definitions({}), services, settings)
    runtime = Runtime(settings, services, engine)
    now = time.time()
    records = [
        Event.create(START, "aws-done", "parcel", "h1", 0, 0, "packing", None, now - 30, {"sku": "a"}),
        Event.create(STEP, "aws-done", "parcel", "h1", 1, 0, "labelling", "labelled", now - 20, {"sku": "a"}),
        Event.create(COMPLETED, "aws-done", "parcel", "h1", 2, 0, "shipped", None, now - 10, {"sku": "a"}),
        Event.create(START, "aws-stalled", "parcel", "h1", 0, 0, "packing", None, now - 7200, {"sku": "b"}),
        Event.create(START, "aws-running", "parcel", "h1", 0, 0, "packing", None, now, {"sku": "c"}),
    ]
    services.log.append([OutRecord(e.correlation_id, encode(e)) for e in records])
    parked = Event.create(START, "aws-parked", "parcel", "h1", 0, 0, "packing", None, now - 5, {"sku": "d"})
    letter = services.dead_letters.park("poison", "kinesis", "49-1", encode(parked), now - 5)
    client = TestClient(create_app(runtime, token=TOKEN, allowed_hosts=[*LOOPBACK_HOSTS]),
                        base_url="http://127.0.0.1")
    try:
        yield client, letter
    finally:
        client.close()
        runtime.close()


def test_the_console_reads_and_steers_machines_on_kinesis_and_dynamodb(console):
    client, letter = console
    listing = client.get("/api/machines").json()
    assert listing["log"].startswith("arn:aws:kinesis:")
    assert listing["counts"] == {"running": 1, "stalled": 1, "completed": 1, "failed": 0, "aborted": 0}

    one = client.get("/api/machines/aws-done").json()
    assert one["machine"]["status"] == "completed" and one["context"] == {"sku": "a"}
    history = client.get("/api/machines/aws-done/history").json()
    assert [h["record"]["kind"] for h in history] == ["start", "step", "completed"]
    assert client.get("/api/machines/nope").status_code == 404

    done = client.post("/api/machines/aws-stalled/redispatch", headers=AUTH).json()
    assert done["written"] and done["redispatched"]["retries"] == 1
    kinds = [h["record"]["kind"] for h in client.get("/api/machines/aws-stalled/history").json()]
    assert kinds == ["start", "retry"]  # appended to the Kinesis stream

    assert client.post(f"/api/dead-letters/{letter}/redrive").status_code == 401
    assert client.post(f"/api/dead-letters/{letter}/redrive", headers=AUTH).json()["correlation_id"] == \
        "aws-parked"
    assert client.get("/api/dead-letters").json() == []
    assert client.get("/api/machines/aws-parked").json()["machine"]["status"] == "running"

    aborted = client.post("/api/machines/aws-running/abort", json={"reason": "on AWS"}, headers=AUTH)
    assert aborted.status_code == 200, aborted.text
    assert client.get("/api/machines/aws-running").json()["machine"]["error"] == "Aborted: on AWS"

    page = client.get("/machines/aws-done")
    assert page.status_code == 200 and "Start the console with" in page.text  # no --fsm: no graph


def test_the_overview_reads_the_series_back_from_cloudwatch(console):
    from handlers.metrics import Datum

    client, _letter = console
    metrics = client.app.state.reader.rt.services.metrics
    metrics.put([Datum("Transitions", 5, (("machine", "parcel"),)), Datum("Transitions", 2, (("machine", "order"),)),
                 Datum("MachinesFailed", 1, (("machine", "parcel"),))])
    doc = client.get("/api/overview").json()
    assert doc["source"] == "metrics" and doc["records"] is None  # the log was not read
    assert sum(doc["series"]["transitions"]) == 7 and sum(doc["series"]["failures"]) == 1
    assert "read back from the metrics" in client.get("/overview").text
