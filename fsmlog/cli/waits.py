"""What a running machine waits for, in a few words for a table cell or a transition line.

A waiting machine is ``running`` by its status, which tells its operator nothing: one on a
timer, one waiting for a person's event and one waiting for its children need different
actions (none, ``fsmlog send``, look at the children). ``status ID`` says it at length
(``machines.waiting_line``); these words fit a column of an 80-column table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from eventlog.event import RETRY, STEP

if TYPE_CHECKING:
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
