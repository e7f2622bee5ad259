"""Events sent from outside (``fsmlog send``, ``fsmlog.client.send_event``, ``POST /machines/{id}/events``).

A machine in a ``wait: true`` state has, as its latest record, an idle step record at step n
(``event`` None, or its ``on_timeout`` event with a due time). An event sent to it is a step
record at the same step n firing the event, with the sender's ``event_id`` and the data under
``context["event_data"]``. The idle record, its timeout and any other event sent for step n
share one attempt key, so the step gate runs exactly one of them; an event that loses is parked
as a dead letter when it reaches a worker (``Engine.late_event``). The ids of applied events travel
in every later record (``Event.seen``), so the same ``event_id`` sent again is applied once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from eventlog.event import RETRY, START, STEP, Event
from projections.definition import MachineDef
from projections.state import MachineState

from .errors import EventRefused

EVENT_DATA = "event_data"  # the context key an event's data is put under


@dataclass(frozen=True, slots=True)
class Sent:
    """What became of a sent event: ``record`` to append, or None when ``event_id`` was applied already."""

    correlation_id: str
    event_id: str
    record: Event | None
    state: str

    @property
    def duplicate(self) -> bool:
        return self.record is None


def sent_event(state: MachineState | None, mdef: MachineDef | None, correlation_id: str, event: str,
               data: Any = None, event_id: str | None = None, *, now: float) -> Sent:
    """The record that delivers ``event`` to the machine, or ``EventRefused`` naming its state and the event."""
    event_id = event_id or uuid.uuid4().hex
    if state is None or mdef is None:
        raise EventRefused(f"no machine with id {correlation_id!r} (event {event!r} not sent); "
                           "`fsmlog status` lists machines", code="UnknownMachine",
                           correlation_id=correlation_id, event=event)
    last = state.last
    where = f"machine {last.machine!r} ({correlation_id}) in state {last.state!r}"
    if event_id in last.seen or (last.event_id == event_id and last.event == event):
        return Sent(correlation_id, event_id, None, last.state)
    if last.terminal:
        raise EventRefused(f"{where} has ended ({last.kind}); event {event!r} not sent",
                           code="Ended", correlation_id=correlation_id, machine=last.machine, state=last.state,
                           event=event)
    st = mdef.state(last.state)
    if st is not None and st.wait and last.kind == START:  # a caller that started it just now may retry
        raise EventRefused(f"{where} has not reached its wait yet: its start record waits for a worker "
                           f"(`fsmlog worker`); event {event!r} not sent, send it once the start has run",
                           code="NotWaitingYet", correlation_id=correlation_id, machine=last.machine,
                           state=last.state, event=event)
    if st is None or not st.wait or last.kind not in (STEP, RETRY):  # (a retry: a wait redispatched)
        raise EventRefused(f"{where} is not waiting for an event (only 'wait: true' states are); "
                           f"event {event!r} not sent", code="NotWaiting", correlation_id=correlation_id,
                           machine=last.machine, state=last.state, event=event)
    if st.children:
        raise EventRefused(f"{where} waits for its child machines, not for an event from outside; "
                           f"event {event!r} not sent", code="NotWaiting", correlation_id=correlation_id,
                           machine=last.machine, state=last.state, event=event)
    if st.transition(event) is None:
        known = ", ".join(sorted(st.events())) or "none"
        raise EventRefused(f"{where} has no transition on event {event!r} (its events: {known}); not sent",
                           code="NoTransition", correlation_id=correlation_id, machine=last.machine,
                           state=last.state, event=event)
    if last.event_id is not None:
        raise EventRefused(f"{where} already has event {last.event!r} (id {last.event_id}) waiting to be "
                           f"applied; event {event!r} not sent", code="EventPending",
                           correlation_id=correlation_id, machine=last.machine, state=last.state, event=event)
    context = last.context
    if data is not None:
        context[EVENT_DATA] = data
    # at the attempt of the record it answers: below a redispatched wait's retry, a gate that asks the log
    # (its cache forgot the machine) would judge the event handled already and park it
    record = Event.create(STEP, correlation_id, last.machine, last.definition_hash, last.steps, last.retries,
                          last.state,
                          event, now, context, event_id=event_id, seen=last.seen)
    return Sent(correlation_id, event_id, record, last.state)
