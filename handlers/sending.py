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
from typing import Any, NoReturn

from eventlog.event import RETRY, START, STEP, Event
from projections.definition import MachineDef, StateDef
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
    if event_id in last.seen or (last.event_id == event_id and last.event == event):
        return Sent(correlation_id, event_id, None, last.state)
    Admission(last, mdef.state(last.state), event).check()
    context = last.context
    if data is not None:
        context[EVENT_DATA] = data
    # at the attempt of the record it answers: below a redispatched wait's retry, a gate that asks the log
    # (its cache forgot the machine) would judge the event handled already and park it
    record = Event.create(STEP, correlation_id, last.machine, last.definition_hash, last.steps, last.retries,
                          last.state, event, now, context, event_id=event_id, seen=last.seen)
    return Sent(correlation_id, event_id, record, last.state)


class Admission:
    """Whether a waiting machine can take an event sent from outside: one rule per method, checked in
    order, each refusing with its own ``code`` so the sender (CLI exit 1, HTTP 409) can branch on it.

    ``last`` is the machine's latest record and ``st`` its state's definition (None: the state is gone
    from the definitions)."""

    def __init__(self, last: Event, st: StateDef | None, event: str) -> None:
        self.last = last
        self.st = st
        self.event = event
        self.where = f"machine {last.machine!r} ({last.correlation_id}) in state {last.state!r}"

    def check(self) -> None:
        for rule in (self.not_ended, self.started, self.waits_for_events, self.has_transition,
                     self.nothing_pending):
            rule()

    def refuse(self, why: str, code: str) -> NoReturn:
        last = self.last
        raise EventRefused(f"{self.where} {why}", code=code, correlation_id=last.correlation_id,
                           machine=last.machine, state=last.state, event=self.event)

    def not_ended(self) -> None:
        if self.last.terminal:
            self.refuse(f"has ended ({self.last.kind}); event {self.event!r} not sent", "Ended")

    def started(self) -> None:
        """A machine started in a wait state waits only once a worker ran its start: worth sending again."""
        if self.st is not None and self.st.wait and self.last.kind == START:
            self.refuse(f"has not reached its wait yet: its start record waits for a worker (`fsmlog worker`); "
                        f"event {self.event!r} not sent, send it once the start has run", "NotWaitingYet")

    def waits_for_events(self) -> None:
        st = self.st
        if st is None or not st.wait or self.last.kind not in (STEP, RETRY):  # (a retry: a wait redispatched)
            self.refuse(f"is not waiting for an event (only 'wait: true' states are); event {self.event!r} "
                        "not sent", "NotWaiting")
        if st.children:
            self.refuse(f"waits for its child machines, not for an event from outside; event {self.event!r} "
                        "not sent", "NotWaiting")

    def has_transition(self) -> None:
        st = self.st
        if st is not None and st.transition(self.event) is None:
            known = ", ".join(sorted(st.events())) or "none"
            self.refuse(f"has no transition on event {self.event!r} (its events: {known}); not sent",
                        "NoTransition")

    def nothing_pending(self) -> None:
        """Two events for one wait would race at the step gate; the second is refused while the sender sees it."""
        last = self.last
        if last.event_id is not None:
            self.refuse(f"already has event {last.event!r} (id {last.event_id}) waiting to be applied; "
                        f"event {self.event!r} not sent", "EventPending")
