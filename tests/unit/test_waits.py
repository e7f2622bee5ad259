"""Workflows that wait, on the embedded backend with one injected clock: durable timers (``delay:``,
``additional_delay_seconds``), ``wait: true`` states with events sent from outside, and timeouts."""

from __future__ import annotations

from collections import Counter

import pytest

from eventlog.event import STEP
from handlers.errors import EventRefused
from handlers.sending import EVENT_DATA

HERE = __name__
RAN: Counter = Counter()  # (correlation id, action) -> times run
RAN_AT: dict[tuple[str, str], float] = {}  # (correlation id, action) -> clock time of its last run
CLOCK: list = []  # the rig's clock, for the actions


def _recorder(name: str, returns: str | None = None):
    def action(context, obj):
        RAN[(context.correlation_id, name)] += 1
        RAN_AT[(context.correlation_id, name)] = CLOCK[0]()
        return returns

    action.__name__ = action.__qualname__ = name
    return action


ship = _recorder("ship", "shipped")
on_approve = _recorder("on_approve")
on_expire = _recorder("on_expire")
on_reject = _recorder("on_reject")
arrive = _recorder("arrive")


def naps(context, obj):
    """The older framework's knob: the next step waits this much longer."""
    RAN[(context.correlation_id, "naps")] += 1
    context.additional_delay_seconds = context.get("nap", 0)
    return "woke"


def approval() -> dict:
    return {"name": "approval", "states": [
        {"name": "asked", "initial": True, "wait": True, "timeout": "1h", "on_timeout": "expire",
         "transitions": [
             {"event": "approve", "target": "ship", "action": f"{HERE}.on_approve"},
             {"event": "reject", "target": "rejected", "action": f"{HERE}.on_reject"},
             {"event": "expire", "target": "expired", "action": f"{HERE}.on_expire"},
         ]},
        {"name": "ship", "do_action": f"{HERE}.ship",
         "transitions": [{"event": "shipped", "target": "done", "delay": "2m"}]},
        {"name": "done", "final": True, "entry_action": f"{HERE}.arrive"},
        {"name": "rejected", "final": True},
        {"name": "expired", "final": True},
    ]}


def napper() -> dict:
    return {"name": "napper", "states": [
        {"name": "a", "initial": True, "do_action": f"{HERE}.naps",
         "transitions": [{"event": "woke", "target": "b", "delay": 10}]},
        {"name": "b", "final": True, "entry_action": f"{HERE}.arrive"},
    ]}


@pytest.fixture
def rig(rig_factory):
    RAN.clear()
    RAN_AT.clear()
    r = rig_factory([approval(), napper()])
    CLOCK[:] = [r.clock]
    return r


def settle(rig, engine=None) -> None:
    """Handle everything in the log and move what is due, without advancing the clock."""
    engine = engine or rig.engine
    for _ in range(100):
        batch = rig.next_batch()
        if batch:
            engine.handle(batch)
        elif not engine.run_due_retries():
            return
    raise AssertionError("did not settle")


def test_a_wait_state_waits_for_an_event_and_merges_its_data(rig):
    cid = rig.engine.start("approval", {"amount": 40})
    settle(rig)
    state = rig.engine.status(cid)
    assert state.status == "running" and state.state == "asked" and state.waiting_until == rig.clock.t + 3600
    sent = rig.engine.send_event(cid, "approve", {"by": "ana"}, event_id="e-1")
    assert not sent.duplicate and sent.state == "asked"
    settle(rig)
    state = rig.engine.status(cid)
    assert state.state == "ship" and state.event == "shipped"
    assert state.context == {"amount": 40, EVENT_DATA: {"by": "ana"}}
    assert "e-1" in state.last.seen
    assert RAN[(cid, "on_approve")] == 1 and RAN[(cid, "ship")] == 1


def test_a_delay_runs_the_step_no_earlier_than_due_and_once(rig):
    cid = rig.engine.start("approval")
    settle(rig)
    rig.engine.send_event(cid, "approve")
    settle(rig)
    waiting = rig.engine.status(cid)
    due = waiting.last.due
    assert due == RAN_AT[(cid, "ship")] + 120 and waiting.waiting_until == due
    rig.clock.t = due - 0.5
    settle(rig)
    assert RAN[(cid, "arrive")] == 0 and rig.engine.status(cid).status == "running"
    rig.clock.t = due
    settle(rig)
    assert RAN[(cid, "arrive")] == 1 and RAN_AT[(cid, "arrive")] >= due
    assert rig.engine.status(cid).status == "completed"
    for rec in rig.log.read_key(cid):  # every copy delivered again: nothing runs twice
        rig.engine.handle([rig.inbound(rec)])
    settle(rig)
    assert RAN[(cid, "arrive")] == 1


def test_additional_delay_seconds_adds_to_the_transitions_delay(rig):
    cid = rig.engine.start("napper", {"nap": 50})
    t0 = rig.clock.t
    settle(rig)
    assert rig.engine.status(cid).waiting_until == t0 + 60
    assert "additional_delay_seconds" not in rig.engine.status(cid).context
    rig.clock.t = t0 + 59
    settle(rig)
    assert RAN[(cid, "arrive")] == 0
    rig.clock.t = t0 + 60
    settle(rig)
    assert RAN[(cid, "arrive")] == 1


def test_the_timeout_fires_its_event_when_nothing_arrived(rig):
    cid = rig.engine.start("approval")
    t0 = rig.clock.t
    settle(rig)
    rig.clock.t = t0 + 3599
    settle(rig)
    assert rig.engine.status(cid).state == "asked"
    rig.clock.t = t0 + 3600
    settle(rig)
    state = rig.engine.status(cid)
    assert (state.status, state.state) == ("completed", "expired") and RAN[(cid, "on_expire")] == 1


def test_an_event_that_arrives_after_the_timeout_ran_is_parked_with_the_reason(rig):
    cid = rig.engine.start("approval")
    t0 = rig.clock.t
    settle(rig)
    wait = rig.engine.status(cid)
    rig.clock.t = t0 + 3600
    # sent just before the timeout's step ran, so the sender saw the machine waiting
    from eventlog.codec import encode
    from eventlog.log import OutRecord
    from handlers.sending import sent_event

    late = sent_event(wait, rig.definitions.machine("approval"), cid, "approve", event_id="late-1",
                      now=rig.clock.t).record
    rig.engine.run_due_retries()
    settle(rig)
    rig.log.append([OutRecord(cid, encode(late))])
    settle(rig)
    assert rig.engine.status(cid).state == "expired" and RAN[(cid, "on_approve")] == 0
    parked = rig.services.dead_letters.list(10)
    assert len(parked) == 1 and "late-1" in parked[0].reason and "approve" in parked[0].reason


@pytest.mark.parametrize("event, code", [("ship", "NoTransition"), ("shipped", "NoTransition")])
def test_an_event_with_no_transition_is_refused_naming_state_and_event(rig, event, code):
    cid = rig.engine.start("approval")
    settle(rig)
    with pytest.raises(EventRefused) as info:
        rig.engine.send_event(cid, event)
    assert (info.value.code, info.value.state, info.value.event) == (code, "asked", event)
    assert "'asked'" in str(info.value) and repr(event) in str(info.value)


def test_a_machine_not_in_a_wait_state_refuses_events(rig):
    cid = rig.engine.start("approval")
    settle(rig)
    rig.engine.send_event(cid, "approve")
    settle(rig)
    with pytest.raises(EventRefused) as info:
        rig.engine.send_event(cid, "approve")
    assert info.value.code == "NotWaiting" and info.value.state == "ship"
    with pytest.raises(EventRefused) as info:
        rig.engine.send_event("nobody", "approve")
    assert info.value.code == "UnknownMachine"


def test_the_same_event_id_is_applied_once_even_in_a_later_wait(rig):
    cid = rig.engine.start("approval")
    settle(rig)
    assert not rig.engine.send_event(cid, "approve", event_id="x").duplicate
    assert rig.engine.send_event(cid, "approve", event_id="x").duplicate  # pending: the same send again
    settle(rig)
    rig.clock.t += 200
    settle(rig)
    assert rig.engine.status(cid).status == "completed"
    assert RAN[(cid, "on_approve")] == 1
    kinds = [(e.kind, e.state, e.event) for e in rig.records(cid) if e.kind == STEP]
    assert kinds.count(("step", "asked", "approve")) == 1


def test_the_graph_draws_waits_delays_and_timeouts(rig):
    from fsmlog.graph import to_dot, to_mermaid

    dot = to_dot(rig.definitions.machine("approval"))
    assert '"asked" [label="asked\\nwaits for an event"]' in dot
    assert '"asked" -> "expired" [label="expire / on_expire (timeout 1h)", style=dotted];' in dot
    assert '"ship" -> "done" [label="shipped (after 2m)"];' in dot
    mermaid = to_mermaid(rig.definitions.machine("approval"))
    assert "note right of asked : waits for an event" in mermaid
    assert "ship --> done : shipped (after 2m)" in mermaid


def test_a_retry_source_that_cannot_hold_a_due_time_is_warned_about(rig, caplog):
    class Stream:
        delays = False
        name = "arn:aws:kinesis:us-east-1:123456789012:stream/retries"

    rig.services.retries, real = Stream(), rig.services.retries
    try:
        with caplog.at_level("WARNING", logger="fsmlog.engine"):
            rig.make_engine()
    finally:
        rig.services.retries = real
    [line] = [r.getMessage() for r in caplog.records if "due time" in r.getMessage()]
    assert "approval, napper" in line and "PRIMARY_RETRY_SOURCE" in line and Stream.name in line


def test_a_redispatched_wait_still_waits_and_takes_events(rig):
    from eventlog.codec import encode
    from eventlog.log import OutRecord
    from replay.rebuild import retry_record

    cid = rig.engine.start("approval")
    settle(rig)
    rig.log.append([OutRecord(cid, encode(retry_record(rig.engine.status(cid), rig.clock)))])
    settle(rig)  # early: nothing runs, the timeout still waits
    assert rig.engine.status(cid).state == "asked" and RAN[(cid, "on_expire")] == 0
    rig.engine.send_event(cid, "reject")
    settle(rig)
    assert rig.engine.status(cid).state == "rejected" and RAN[(cid, "on_reject")] == 1
