"""Child machines: fan-out from an action, fan-in at a ``wait: children`` state.

An action calls ``obj["children"].start(machine, [contexts])``. The children's start records go
out in the same append as the step that started them (not before: a step that fails starts
nothing), each with ``parent`` set, and ids derived from the step's idempotency key, so a step
run again starts the same children, not new ones. Their ids are added to the parent's
``context["children"]``.

The join: a child whose record ends it (completed, failed, aborted), and a parent that reaches
its ``wait: children`` state, each ask the log afterwards whether the parent now waits there with
every child ended; if so they send the parent ``children_done`` with ``context["children"]`` =
each child's id, status, state and final context. Whichever of them sees the last end sends it;
two that both do send the same ``event_id`` (``children:<step>``), which the step gate applies
once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eventlog.event import RETRY, START, STEP, Event
from projections.definition import CHILDREN_DONE, Definitions
from projections.state import MachineState

CHILDREN = "children"  # the parent's context key: child ids, then (on children_done) their outcomes


class Children:
    """``obj["children"]``: starts child machines from an action."""

    def __init__(self, definitions: Definitions, parent: str, obj: dict, context: dict,
                 clock: Callable[[], float]) -> None:
        self._definitions = definitions
        self._parent = parent
        self._obj = obj
        self._context = context
        self._clock = clock
        self.starts: list[Event] = []

    def start(self, machine: str, contexts: Sequence[dict[str, Any]]) -> list[str]:
        """Start one ``machine`` per context when this step commits; returns their correlation ids."""
        mdef = self._definitions.machine(machine)
        key = self._obj["idempotency_key"]
        now = self._clock()
        ids = []
        for ctx in contexts:
            cid = f"{key}.{len(self.starts)}"
            self.starts.append(Event.create(START, cid, machine, mdef.hash, 0, 0, mdef.initial.name, None, now,
                                            dict(ctx), parent=self._parent))
            ids.append(cid)
        known = self._context.get(CHILDREN)
        self._context[CHILDREN] = [*(known if isinstance(known, list) else []), *ids]
        return ids


def join_record(parent: MachineState | None, definitions: Definitions,
                children: Callable[[str], MachineState | None], now: float) -> Event | None:
    """``children_done`` for ``parent`` when it waits in a ``wait: children`` state and every child has
    ended (``children`` reads one child from the log); else None."""
    if parent is None or parent.terminal:
        return None
    last = parent.last
    mdef = definitions.machines.get(last.machine)
    st = mdef.state(last.state) if mdef is not None else None
    idle = last.kind in (STEP, RETRY) and last.event_id is None and (last.event is None or last.due is not None)
    if st is None or not st.children or not idle:
        return None
    context = last.context
    ids = context.get(CHILDREN) or []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return None  # already joined (outcomes, not ids), or not ours to read
    outcomes = []
    for cid in ids:
        child = children(cid)
        if child is None or not child.terminal:
            return None
        outcomes.append({"id": cid, "status": child.status, "state": child.state, "context": child.context,
                         "error": child.error})
    context[CHILDREN] = outcomes
    # at the attempt of the record it answers (a redispatched wait's retry included): see sending.py
    return Event.create(STEP, last.correlation_id, last.machine, last.definition_hash, last.steps, last.retries,
                        last.state, CHILDREN_DONE, now, context, event_id=f"{CHILDREN}:{last.steps}", seen=last.seen,
                        parent=last.parent)
