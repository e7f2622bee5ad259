"""What a run leaves behind: every action invocation, the log, each machine's outcome, the faults that hit.

A ``Run`` is what user tests assert on (``@given`` over cases, then invariants
over ``run.invocations``, ``run.log`` and ``run.machines``) and what the
built-in properties (``fsmlog.testing.properties``) judge.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventlog.event import Event
from projections.state import MachineState

from .adversary import Case


def snapshot(context: Any) -> dict[str, Any]:
    """A deep copy of a user context as a plain dict, so later steps cannot change what was recorded."""
    plain = dict(context)
    try:
        return copy.deepcopy(plain)
    except Exception:  # a value that cannot be copied is recorded by its repr
        return {k: repr(v) for k, v in plain.items()}


@dataclass(frozen=True)
class Invocation:
    """One call of one action: where the machine was, what it got, what it left and returned."""

    correlation_id: str
    machine: str
    action: str  # the dotted path fsm.yaml names
    role: str  # "entry", "do", "exit" or "transition" (read off the definition)
    state: str  # context.current_state when called
    event: str | None  # context.current_event (None: the start)
    steps: int
    retries: int
    execution: int  # one engine run of one delivered record (its local chain included)
    context_in: dict[str, Any]
    context_out: dict[str, Any] | None  # None when it raised
    returned: Any = None
    error: str | None = None  # "Type: message" when it raised
    injected: bool = False  # the raise was the adversary's, after the action itself returned
    idempotency_key: str = ""

    @property
    def attempt(self) -> tuple[int, int]:
        return self.steps, self.retries


@dataclass(frozen=True)
class AppliedFault:
    """A fault of the schedule that met its record: what was done, to which machine, where."""

    kind: str  # crash, duplicate, raise, abort
    index: int  # the machine's index in the case
    correlation_id: str
    steps: int
    retries: int
    state: str
    event: str | None

    def describe(self) -> str:
        what = {"crash": "crash before the commit of", "duplicate": "delivered twice:",
                "raise": "action raised after running, at", "abort": "aborted at"}[self.kind]
        at = f"{self.state} --{self.event}-->" if self.event else f"{self.state} (start)"
        retry = f" retry {self.retries}" if self.retries else ""
        return f"{what} machine #{self.index} step {self.steps}{retry} ({at})"


@dataclass(frozen=True)
class MachineOutcome:
    """One machine of a run: its input, where it ended (the engine's view) and the fold of its records."""

    index: int
    correlation_id: str
    context: dict[str, Any]
    final: MachineState | None  # engine.status at the end of the run
    folded: MachineState | None  # the fold of every record of it in the run's log
    aborted: bool = False  # the adversary aborted it

    @property
    def status(self) -> str:
        return self.final.status if self.final else "missing"


@dataclass
class Run:
    """Everything one run of a case did. ``faulty`` is False for the fault-free run of the same inputs."""

    case: Case
    faulty: bool
    machines: tuple[MachineOutcome, ...]
    invocations: tuple[Invocation, ...]
    log: tuple[Event, ...]
    applied: tuple[AppliedFault, ...]
    crashed: frozenset[int]  # executions cut short by a simulated crash (their outcome was never appended)
    exceeded: str | None  # the correlation id of a machine that ran past max_steps (the run stopped there)
    db_path: Path  # the embedded file of the run: `fsmlog history --db PATH ID` shows a machine
    workdir: Path  # the run's own working directory (files actions keep by relative path land here)
    deliveries: int = 0
    definitions: Any = field(default=None, repr=False)  # the machines it ran (projections.definition)

    def machine(self, index: int = 0) -> MachineOutcome:
        return self.machines[index]

    def invocations_of(self, correlation_id: str) -> list[Invocation]:
        return [i for i in self.invocations if i.correlation_id == correlation_id]

    def records_of(self, correlation_id: str) -> list[Event]:
        return [e for e in self.log if e.correlation_id == correlation_id]

    @contextmanager
    def inside(self) -> Iterator[Path]:
        """Work in the run's directory for a while, e.g. to read a store an action kept by relative path."""
        before = os.getcwd()
        os.chdir(self.workdir)
        try:
            yield self.workdir
        finally:
            os.chdir(before)
