"""The one record type of the log.

Every log entry (a machine started, a step dispatched, a step retried, a
machine completed, failed or aborted) is an ``Event``. It carries everything a
worker needs to run the next step, so a record is self-contained: the fold
never has to look anything up.

Meaning of ``state``/``event``: the machine is in ``state`` and the worker that
handles this record fires ``event`` from it. ``event`` is ``None`` for the
start step (run the initial state's entry and do actions) and on terminal
records, whose ``state`` is where the machine stopped.

Waiting: a record with ``due`` runs no earlier than that time (its copy in the
retry source's due-time store brings it back then). A step record whose state
is a ``wait`` state and whose ``event`` is ``None`` (or whose ``due`` lies
ahead) says the machine waits there for an event sent from outside; such an
event is a step record carrying the sender's ``event_id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .context import EMPTY_CONTEXT, decode_context, encode_context

START = "start"
STEP = "step"
RETRY = "retry"
COMPLETED = "completed"
FAILED = "failed"
ABORTED = "aborted"

KINDS = (START, STEP, RETRY, COMPLETED, FAILED, ABORTED)
TERMINAL = frozenset((COMPLETED, FAILED, ABORTED))
DISPATCHABLE = frozenset((START, STEP, RETRY))


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    correlation_id: str
    machine: str
    definition_hash: str
    steps: int
    retries: int
    state: str
    event: str | None
    time: float
    context_raw: bytes = EMPTY_CONTEXT
    error_type: str | None = None
    error_message: str | None = None
    upgraded_from: str | None = None
    due: float | None = None  # not to run before this time: a durable timer (``delay:``, ``timeout:``)
    event_id: str | None = None  # the sender's id of an event sent from outside (``fsmlog send``)
    seen: tuple[str, ...] = ()  # ids of the latest events sent from outside, applied once each
    parent: str | None = None  # the correlation id of the machine that started this one (a child)

    @classmethod
    def create(
        cls,
        kind: str,
        correlation_id: str,
        machine: str,
        definition_hash: str,
        steps: int,
        retries: int,
        state: str,
        event: str | None,
        time: float,
        context: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> Event:
        """Build an event from a user context, refusing (with the key named) values that cannot travel."""
        where = f" of machine {machine!r} ({correlation_id}) at step {steps} in state {state!r}"
        raw = EMPTY_CONTEXT if not context else encode_context(context, where)
        return cls(kind, correlation_id, machine, definition_hash, steps, retries, state, event, time, raw, **extra)

    @property
    def context(self) -> dict[str, Any]:
        """A fresh copy of the user context (decoded on demand: the fold never needs it)."""
        return decode_context(self.context_raw)

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL

    def waiting(self, now: float) -> bool:
        """Whether this running record must not run yet (its due time lies ahead)."""
        return self.due is not None and self.due > now and self.kind in DISPATCHABLE

    @property
    def key(self) -> tuple[str, int, int]:
        """What the dispatch engine deduplicates on."""
        return (self.correlation_id, self.steps, self.retries)

    def evolve(self, **changes: Any) -> Event:
        if "context" in changes:
            ctx = changes.pop("context")
            changes["context_raw"] = EMPTY_CONTEXT if not ctx else encode_context(ctx)
        return replace(self, **changes)

    def describe(self) -> str:
        what = f"{self.kind} {self.machine}/{self.correlation_id} step {self.steps}"
        if self.retries:
            what += f" retry {self.retries}"
        return f"{what} in state {self.state!r}" + (f" on event {self.event!r}" if self.event else "")
