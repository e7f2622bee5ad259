"""fsmlog.client: the older framework's start functions, events sent from outside, status and abort,
on the embedded backend; and that importing it loads nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eventlog.settings import SOURCES, load_settings
from fsmlog import client
from handlers.errors import EventRefused, HandlerError
from projections.definition import from_dict
from tests.unit.test_waits import approval, napper


@pytest.fixture
def app(tmp_path):
    url = f"sqlite:///{tmp_path}/app.db"
    settings = load_settings(environ={}, **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES})
    c = client.configure(from_dict({"machines": [approval(), napper()]}), settings)
    yield c
    c.close()


def test_importing_the_client_loads_no_engine_and_no_aws_library():
    code = ("import sys, fsmlog.client; heavy = [m for m in ('boto3', 'handlers.engine', 'rich') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_start_state_machines_appends_every_start_in_one_call(app):
    calls = []
    log = app.engine.services.log
    real = log.append
    log.append = lambda records: calls.append(len(records)) or real(records)
    ids = client.start_state_machines("approval", [{"n": i} for i in range(5)], [f"m-{i}" for i in range(5)])
    assert ids == [f"m-{i}" for i in range(5)] and calls == [5]
    assert [client.status(i).context for i in ids] == [{"n": i} for i in range(5)]


def test_start_state_machine_with_the_older_frameworks_arguments(app):
    cid = client.start_state_machine("approval", {"a": 1}, correlation_id="o-1", current_state="asked",
                                     current_event="reject")
    state = client.status(cid)
    assert cid == "o-1" and (state.state, state.event, state.steps) == ("asked", "reject", 0)
    with pytest.raises(HandlerError, match="'nowhere'"):
        client.start_state_machine("approval", {}, current_state="nowhere")


def test_a_delayed_start_waits_in_the_retry_source(app):
    cid = client.start_state_machine("napper", {}, additional_delay_seconds=90)
    state = client.status(cid)
    assert state.waiting_until is not None and state.waiting_until >= state.time + 90
    assert app.engine.services.retries.pending() == 1


def test_send_event_status_and_abort(app):
    cid = client.start_state_machine("approval", {}, current_state="asked", current_event=None)
    app.engine.handle([])  # nothing ran yet: the start record waits for a worker
    with pytest.raises(EventRefused) as info:
        client.send_event(cid, "approve")  # the start has not run: the machine is not waiting yet
    assert (info.value.code, info.value.state, info.value.event) == ("NotWaitingYet", "asked", "approve")
    ended = client.abort(cid, "no longer needed")
    assert ended.kind == "aborted" and client.status(cid).status == "aborted"
    with pytest.raises(EventRefused) as info:
        client.send_event(cid, "approve")
    assert info.value.code == "Ended"
