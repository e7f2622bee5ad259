"""Durable timers in the AWS retry sources, over moto's server: a delayed step waits in DynamoDB or
in SQS (a wait longer than SQS' 15-minute delay is a chain of messages) and runs once, at its due
time, never before. The rest of the services are embedded; one injected clock drives them all."""

from __future__ import annotations

import pytest

from tests.contract.aws_factories import dynamodb_retries, sqs_retries  # noqa: F401 (fixtures)
from tests.unit.engine_rig import Rig
from tests.unit.test_waits import CLOCK, RAN, RAN_AT, approval, napper, settle

pytestmark = pytest.mark.integration


@pytest.fixture(params=["dynamodb_retries", "sqs_retries"])
def rig(request, tmp_path):
    store = request.getfixturevalue(request.param)
    r = Rig(tmp_path, [approval(), napper()])
    if hasattr(store, "clock"):
        store.clock = r.clock
    r.services.retries = store
    r.engine = r.make_engine()
    CLOCK[:] = [r.clock]
    RAN.clear()
    RAN_AT.clear()
    yield r
    r.close()


@pytest.mark.parametrize("nap", [0, 2 * 3600])  # 10 s, and 2 h + 10 s (eight chained SQS links)
def test_a_delayed_step_waits_in_the_aws_retry_source_and_runs_once_when_due(rig, nap):
    cid = rig.engine.start("napper", {"nap": nap})
    t0 = rig.clock.t
    settle(rig)
    due = rig.engine.status(cid).waiting_until
    assert due == t0 + 10 + nap
    for t in sorted({t0 + 5, t0 + nap / 2, due - 1}):  # the timer polls early: nothing runs
        rig.clock.t = t
        settle(rig)
        assert RAN[(cid, "arrive")] == 0
    rig.clock.t = due
    settle(rig)
    assert RAN[(cid, "arrive")] == 1 and RAN_AT[(cid, "arrive")] >= due
    rig.clock.t += 3600
    settle(rig)
    assert RAN[(cid, "arrive")] == 1 and rig.engine.status(cid).status == "completed"
