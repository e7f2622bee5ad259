"""replay scan and machines that wait: stalled only from a timer's due time plus the threshold; a wait
state with no timeout is never stalled; an event sent to it and not handled is."""

from __future__ import annotations

from eventlog.event import START, STEP, Event
from projections.state import MachineState
from replay.scan import stalled

T = 1_000_000.0


def state(kind=STEP, steps=1, st="asked", event=None, **extra) -> MachineState:
    return MachineState(Event.create(kind, f"m-{steps}-{event}-{extra}", "approval", "h", steps, 0, st, event, T,
                                     **extra))


def test_a_timer_is_not_stalled_before_its_due_time_plus_the_threshold():
    timer = state(event="expire", due=T + 3600)
    assert stalled([timer], now=T + 3600 + 60, stalled_after_s=120) == []
    [found] = stalled([timer], now=T + 3600 + 121, stalled_after_s=120)
    assert found.stuck_s == 121


def test_a_wait_with_no_timeout_is_never_stalled_but_a_sent_event_left_unhandled_is():
    idle = state(event=None)
    sent = state(event="approve", event_id="f-1")
    assert stalled([idle], now=T + 10**7, stalled_after_s=120) == []
    assert [s.state for s in stalled([idle, sent], now=T + 121, stalled_after_s=120)] == [sent]


def test_a_start_that_has_not_run_is_stalled_as_before():
    start = state(kind=START, steps=0)
    assert len(stalled([start], now=T + 121, stalled_after_s=120)) == 1


def test_the_parent_of_a_stuck_child_is_reported_with_it():
    parent = MachineState(Event.create(STEP, "p", "basket", "h", 2, 0, "joining", None, T,
                                       {"children": ["p:0.0"]}))
    child = MachineState(Event.create(STEP, "p:0.0", "item", "h", 1, 0, "charging", "ok", T, parent="p"))
    assert stalled([parent], now=T + 10**6, stalled_after_s=120) == []
    found = stalled([parent, child], now=T + 121, stalled_after_s=120)
    assert sorted(x.correlation_id for x in found) == ["p", "p:0.0"] and {x.stuck_s for x in found} == {121}


def test_a_parent_whose_children_all_ended_but_was_not_joined_is_stalled():
    parent = MachineState(Event.create(STEP, "p", "basket", "h", 2, 0, "joining", None, T,
                                       {"children": ["p:0.0"]}))
    done = MachineState(Event.create("completed", "p:0.0", "item", "h", 2, 0, "charged", None, T + 50,
                                     parent="p"))
    assert stalled([parent, done], now=T + 50 + 119, stalled_after_s=120) == []
    [found] = stalled([parent, done], now=T + 50 + 121, stalled_after_s=120)
    assert found.correlation_id == "p" and found.stuck_s == 121
