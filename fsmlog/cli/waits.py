"""What a running machine waits for, in a few words for a table cell or a transition line.

A waiting machine is ``running`` by its status, which tells its operator nothing: one on a
timer, one waiting for a person's event and one waiting for its children need different
actions (none, ``fsmlog send``, look at the children). ``status ID`` says it at length
(``machines.waiting_line``); these words fit a column of an 80-column table.
``scheduled_line`` says the same of the retry source's due-time store for ``worker --once``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from eventlog.codec import decode
from eventlog.errors import DecodeError
from eventlog.event import RETRY, STEP

if TYPE_CHECKING:
    from handlers.retries import ScheduledRetry
    from projections.definition import Definitions
    from projections.state import MachineState

CHILDREN = "children"  # the parent's context key (handlers.children): child ids until they join


class WaitWords:
    """Describes a machine's wait, one rule per method, the first that applies wins.

    ``definitions`` (when the command loaded an FSM.yaml) says which states wait for children;
    without them a machine idle with unjoined child ids in its context is taken to wait for them,
    which is what a ``wait: children`` state holds until ``children_done``."""

    def __init__(self, definitions: Definitions | None = None, clock: Callable[[], float] = time.time) -> None:
        self.definitions = definitions
        self.clock = clock

    def __call__(self, state: MachineState) -> str | None:
        """``waiting until HH:MM:SS`` / ``waiting for an event`` / ``waiting for N children``, or None."""
        if state.terminal:
            return None
        for rule in (self.timer, self.children, self.event):
            words = rule(state)
            if words is not None:
                return words
        return None

    def timer(self, state: MachineState) -> str | None:
        """A delay or a wait state's timeout: when it runs (local time, as the tables' other times)."""
        due, now = state.waiting_until, self.clock()
        if due is None or (state.last.kind == RETRY and due <= now):
            return None  # a failed timed step's retry keeps the timer's due time: it waits on its backoff
        verb = "waiting until" if due > now else "due since"
        return f"{verb} {time.strftime('%H:%M:%S', time.localtime(due))}"

    def children(self, state: MachineState) -> str | None:
        """A ``wait: children`` state before ``children_done``: how many children it waits for."""
        if not _idle(state):
            return None
        ids = state.context.get(CHILDREN)
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            return None  # none started, or already joined (outcomes, not ids)
        if self.definitions is not None:
            mdef = self.definitions.machines.get(state.machine)
            st = mdef.state(state.state) if mdef is not None else None
            if st is None or not st.children:
                return None
        return f"waiting for {len(ids)} child{'' if len(ids) == 1 else 'ren'}"

    def event(self, state: MachineState) -> str | None:
        """A ``wait: true`` state with no timeout: only an event sent from outside moves it."""
        return "waiting for an event" if _idle(state) else None


def _idle(state: MachineState) -> bool:
    """The machine's latest record is a wait state's idle step (no event to fire, none sent)."""
    last = state.last
    return last.kind in (STEP, RETRY) and last.event is None and last.event_id is None and last.steps > 0


def scheduled_line(store: object, now: float) -> str | None:
    """``2 timers and 1 retry waiting, next due in 2.0s (10:04:05)`` for what waits in the retry
    source's due-time store, or None when nothing waits or the store cannot tell. A store that can
    list its records (``ListedRetries``) is told apart by them: a timer's record carries ``due``, a
    failed step's retry is a retry record; one that can only count (``WaitingRetries``) says
    ``N scheduled record(s)``, since calling a timer a retry would send its reader looking for a
    failure that never happened."""
    from handlers.retries import ListedRetries, WaitingRetries

    if isinstance(store, ListedRetries):
        listed = store.scheduled()
        if not listed:
            return None
        what = _kinds(listed)
        due = min(r.due for r in listed)
    elif isinstance(store, WaitingRetries):
        n, next_due = store.pending(), store.next_due()
        if not n or next_due is None:
            return None
        what, due = f"{n} scheduled record{'' if n == 1 else 's'}", next_due
    else:
        return None
    when = time.strftime("%H:%M:%S", time.localtime(due))
    return f"{what} waiting, next due in {max(0.0, due - now):.1f}s ({when})"


def _kinds(listed: list[ScheduledRetry]) -> str:
    """``2 timers and 1 retry``: each waiting record counted by what its record says it is."""
    timers = retries = unreadable = 0
    for r in listed:
        try:
            ev = decode(r.data)
        except DecodeError:
            unreadable += 1
            continue
        if ev.due is not None and ev.kind != RETRY:
            timers += 1
        else:
            retries += 1
    parts = [f"{timers} timer{'' if timers == 1 else 's'}" if timers else "",
             f"{retries} retr{'y' if retries == 1 else 'ies'}" if retries else "",
             f"{unreadable} unreadable record{'' if unreadable == 1 else 's'}" if unreadable else ""]
    return " and ".join(p for p in parts if p)
