"""POST /machines/{id}/events on the API Gateway trigger: 202 sent (or a duplicate), 409 refused
naming state and event, 404 for no such machine, 400 for a body without an event."""

from __future__ import annotations

import json

import pytest

from handlers.triggers.apigateway import handle_api_event
from tests.unit.test_waits import CLOCK, approval, napper, settle


def post(path, body):
    return {"version": "2.0", "rawPath": path, "requestContext": {"http": {"method": "POST", "path": path}},
            "body": json.dumps(body) if not isinstance(body, str) else body, "isBase64Encoded": False}


@pytest.fixture
def waiting(rig_factory):
    rig = rig_factory([approval(), napper()])
    CLOCK[:] = [rig.clock]  # the example actions note when they ran
    cid = rig.engine.start("approval", {"amount": 3})
    settle(rig)
    return rig, cid


def call(rig, path, body):
    out = handle_api_event(post(path, body), rig.engine)
    return out["statusCode"], json.loads(out["body"])


def test_an_event_is_sent_once_and_a_refusal_names_state_and_event(waiting):
    rig, cid = waiting
    status, body = call(rig, f"/prod/machines/{cid}/events", {"event": "reject", "data": {"why": "no"},
                                                             "event_id": "f-1"})
    assert status == 202 and (body["state"], body["event_id"], body["duplicate"]) == ("asked", "f-1", False)
    status, body = call(rig, f"/machines/{cid}/events", {"event": "reject", "event_id": "f-1"})
    assert status == 202 and body["duplicate"] is True
    settle(rig)
    assert rig.engine.status(cid).context["event_data"] == {"why": "no"}
    status, body = call(rig, f"/machines/{cid}/events", {"event": "approve"})
    assert status == 409 and (body["code"], body["state"], body["event"]) == ("Ended", "rejected", "approve")


def test_no_transition_is_409_and_unknown_machines_404(waiting):
    rig, cid = waiting
    status, body = call(rig, f"/machines/{cid}/events", {"event": "shipped"})
    assert status == 409 and body["code"] == "NoTransition" and "'asked'" in body["error"]
    assert call(rig, "/machines/nobody/events", {"event": "approve"})[0] == 404
    assert call(rig, f"/machines/{cid}/events", {"data": 1})[0] == 400
    assert call(rig, f"/machines/{cid}/events", "[1]")[0] == 400
