"""Hypothesis strategies: valid machine definitions, user contexts and engine-shaped runs.

Definitions are plain dicts in the ``fsm.yaml`` shape (CONTRACT.md §1), without actions.

The run model (what the engine appends for one machine, and what ``check_run`` verifies):

- ``start``: steps 0, retries 0, state = initial, event None. The event the initial do action
  returns rides on the next record: step 1, still in the initial state.
- ``step`` n (n >= 1): the machine is in ``state`` and fires ``event``, an event of that state.
  Firing it goes to ``target``; the next record is step n + 1 in ``target``.
- a transition with ``local: true`` runs the next step in the same invocation, so that next
  record is *not* appended: after a local transition fired at step n the log jumps to n + 2 (or
  further, when transitions keep being local). A record that is appended is never the target
  of a local transition; skipped steps are never retried (a retry is only of an appended step).
- ``retry``: same steps/state/event as an appended step, retries 1, 2, ... up to
  ``max_retries``; appended only after the attempt before it.
- ``completed``: when a fired transition targets a final state: steps n + 1, retries 0,
  state = that final state, event None. (A do action returning None in a non-final state also
  completes a machine in the engine; the generator does not produce that case.)
- ``failed``: at the steps/retries of the last attempt, in its state, event None,
  ``error_type``/``error_message`` set.
- ``aborted``: at the steps/retries of the last appended record, in its state, event None.

Every run ends with its greatest record under the fold's order, so the expected fold of any
permutation (with any duplicates) of a run is simply its last record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from eventlog.event import ABORTED, COMPLETED, FAILED, RETRY, START, STEP, Event

IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
EVENT_NAMES = ("ok", "next", "fail", "retry", "done", "back", "loop", "go", "reject", "skip")
INT64 = st.integers(-(2**63), 2**64 - 1)

# ---------------------------------------------------------------- user contexts

fixed_offsets = st.builds(
    dt.timezone,
    st.timedeltas(min_value=dt.timedelta(hours=-23, minutes=-59), max_value=dt.timedelta(hours=23, minutes=59)),
)
datetimes = st.one_of(
    st.datetimes(),  # naive
    st.datetimes(timezones=st.timezones()),  # zoneinfo, including DST gaps and folds
    st.datetimes(timezones=fixed_offsets),
    st.datetimes(timezones=st.just(dt.timezone.utc)),
)
leaf_values = st.one_of(
    st.none(),
    st.booleans(),
    INT64,
    st.floats(allow_nan=False),
    st.text(max_size=16),
    st.binary(max_size=24),
    datetimes,
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(),
)
context_values = st.recursive(
    leaf_values,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8) | INT64, inner, max_size=4),
    ),
    max_leaves=12,
)
contexts = st.dictionaries(st.text(max_size=10), context_values, max_size=5)
"""Every kind of value a user context may hold (never NaN: NaN != NaN breaks equality)."""

small_contexts = st.dictionaries(
    st.sampled_from(["amount", "sku", "note", "paid_at", "id", "items", "price", "raw"]),
    st.one_of(
        st.none(),
        st.integers(-1000, 10**12),
        st.text(max_size=8),
        st.datetimes(timezones=st.none() | st.timezones()),
        st.decimals(places=2, allow_nan=False, allow_infinity=False, min_value=-10**6, max_value=10**6),
        st.uuids(),
        st.binary(max_size=8),
        st.lists(st.integers(0, 100), max_size=3),
    ),
    max_size=3,
)
"""Cheaper contexts for runs (one per record)."""


# ---------------------------------------------------------------- definitions


def _fresh_event(draw: Any, taken: Mapping[str, Any]) -> str:
    base = draw(st.sampled_from(EVENT_NAMES) | IDENT)
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


@st.composite
def machine_definitions(draw: Any, name: str | None = None) -> dict[str, Any]:
    """One valid machine: exactly one (non-final) initial state, every state reachable from it,
    every non-final state with at least one transition, unique events per state, >= 1 final state."""
    n_running = draw(st.integers(1, 5))
    n_final = draw(st.integers(1, 3))
    names = draw(st.lists(IDENT, min_size=n_running + n_final, max_size=n_running + n_final, unique=True))
    running, finals = names[:n_running], names[n_running:]
    table: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in running}

    def add(src: str, target: str) -> None:
        t: dict[str, Any] = {"event": _fresh_event(draw, table[src]), "target": target}
        local = draw(st.sampled_from([None, False, True]))
        if local is not None:
            t["local"] = local
        table[src][t["event"]] = t

    # a spanning tree from the initial state (running[0]) makes every state reachable
    for i in range(1, n_running):
        add(running[draw(st.integers(0, i - 1))], running[i])
    for f in finals:
        add(running[draw(st.integers(0, n_running - 1))], f)
    for s in running:  # extra edges: loops, back edges, more ways to the end
        extra = draw(st.integers(0 if table[s] else 1, 3))
        for _ in range(extra):
            add(s, draw(st.sampled_from(names)))

    states: list[dict[str, Any]] = []
    for s in names:
        d: dict[str, Any] = {"name": s}
        if s == running[0]:
            d["initial"] = True
        elif draw(st.booleans()):
            d["initial"] = False
        if s in finals:
            d["final"] = True
        elif draw(st.booleans()):
            d["final"] = False
        if s in table:
            d["transitions"] = list(table[s].values())
        states.append(d)
    machine: dict[str, Any] = {"name": name if name is not None else draw(IDENT), "states": draw(st.permutations(states))}
    if draw(st.booleans()):
        machine["max_retries"] = draw(st.integers(0, 6))
    return machine


@st.composite
def definition_docs(draw: Any, min_machines: int = 1, max_machines: int = 3) -> dict[str, Any]:
    """A whole ``fsm.yaml`` document: ``{"machines": [...]}`` with unique machine names."""
    names = draw(st.lists(IDENT, min_size=min_machines, max_size=max_machines, unique=True))
    return {"machines": [draw(machine_definitions(name=n)) for n in names]}


@dataclass(frozen=True)
class Table:
    """A machine dict indexed for walking: ``moves[state][event] = (target, local)``."""

    name: str
    initial: str
    finals: frozenset[str]
    moves: dict[str, dict[str, tuple[str, bool]]]
    max_retries: int

    @classmethod
    def of(cls, machine: Mapping[str, Any]) -> Table:
        moves = {
            s["name"]: {t["event"]: (t["target"], bool(t.get("local", False))) for t in s.get("transitions", ())}
            for s in machine["states"]
        }
        initial = next(s["name"] for s in machine["states"] if s.get("initial"))
        finals = frozenset(s["name"] for s in machine["states"] if s.get("final"))
        return cls(machine["name"], initial, finals, moves, machine.get("max_retries", 3))


def definition_hash(machine: Mapping[str, Any]) -> str:
    """A stand-in content hash for generated records (the real one is projections.definition's)."""
    return hashlib.sha256(repr(machine).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- runs


@dataclass(frozen=True)
class MachineRun:
    """One machine instance's log, in append order."""

    machine: dict[str, Any]
    correlation_id: str
    events: list[Event]

    @property
    def expected(self) -> Event:
        """The record the fold must pick: the run's last (see the module docstring)."""
        return self.events[-1]


@st.composite
def machine_runs(
    draw: Any,
    machine: Mapping[str, Any],
    correlation_id: str,
    max_steps: int = 12,
    context_strategy: st.SearchStrategy[dict[str, Any]] = small_contexts,
) -> MachineRun:
    """The records the engine would append for one run of ``machine`` (model in module docstring)."""
    table = Table.of(machine)
    dhash = definition_hash(machine)
    clock = [draw(st.floats(1.6e9, 1.8e9))]
    out: list[Event] = []

    def emit(kind: str, steps: int, retries: int, state: str, event: str | None, **extra: Any) -> None:
        clock[0] += draw(st.floats(0.001, 30.0))
        ctx = draw(context_strategy)
        out.append(Event.create(kind, correlation_id, table.name, dhash, steps, retries, state, event,
                                clock[0], ctx, **extra))

    emit(START, 0, 0, table.initial, None)
    steps, state, event = 0, table.initial, None
    while True:
        retries = 0
        for r in range(1, draw(st.integers(0, min(table.max_retries, 3))) + 1):
            emit(RETRY, steps, r, state, event)
            retries = r
        end = draw(st.sampled_from(["go", "go", "go", "stop", "fail", "abort"])) if steps < max_steps else "stop"
        if end == "stop":
            break
        if end == "fail":
            emit(FAILED, steps, retries, state, None, error_type=draw(st.sampled_from(["ValueError", "Boom"])),
                 error_message=draw(st.text(max_size=20)))
            break
        if end == "abort":
            emit(ABORTED, steps, retries, state, None)
            break
        # the attempt succeeded: the next step (step 1 stays in the initial state after start)
        if event is not None:
            state, local = table.moves[state][event]
            while state not in table.finals and local:  # skipped records of local transitions
                steps += 1
                event = draw(st.sampled_from(sorted(table.moves[state])))
                state, local = table.moves[state][event]
            if state in table.finals:
                emit(COMPLETED, steps + 1, 0, state, None)
                break
        steps += 1
        event = draw(st.sampled_from(sorted(table.moves[state])))
        emit(STEP, steps, 0, state, event)
    return MachineRun(dict(machine), correlation_id, out)


@dataclass(frozen=True)
class Runs:
    """A definition document plus runs of its machines (several instances may share a machine)."""

    doc: dict[str, Any]
    runs: list[MachineRun]

    @property
    def events(self) -> list[Event]:
        return [e for r in self.runs for e in r.events]

    def machine(self, name: str) -> dict[str, Any]:
        return next(m for m in self.doc["machines"] if m["name"] == name)


@st.composite
def runs(draw: Any, max_instances: int = 4, max_steps: int = 12) -> Runs:
    """Several machine instances (distinct correlation ids) over one generated definition."""
    doc = draw(definition_docs())
    n = draw(st.integers(1, max_instances))
    out = []
    for i in range(n):
        machine = draw(st.sampled_from(doc["machines"]))
        out.append(draw(machine_runs(machine, f"cid-{i}-{draw(IDENT)}", max_steps=max_steps)))
    return Runs(doc, out)


# ---------------------------------------------------------------- checking a log against its table


def check_run(machine: Mapping[str, Any], events: list[Event]) -> None:
    """Assert that one machine's distinct records fit the run model over ``machine``'s table.

    Consecutive records (by steps) must be joined by transitions of the table where every step
    the log skipped was entered by a local transition. Raises AssertionError naming the records.
    """
    table = Table.of(machine)
    by_step: dict[int, list[Event]] = {}
    for e in set(events):
        by_step.setdefault(e.steps, []).append(e)
    for e in events:
        assert e.machine == table.name, e.describe()
        assert e.state in table.moves, f"{e.describe()}: no state {e.state!r}"
        if e.kind in (START, STEP, RETRY):
            if e.kind == START:
                assert (e.steps, e.retries) == (0, 0), e.describe()
            if e.steps == 0:
                assert (e.state, e.event) == (table.initial, None), e.describe()
            else:
                assert e.event in table.moves[e.state], f"{e.describe()}: no such event"
        else:
            assert e.event is None, e.describe()
        if e.kind == COMPLETED:
            assert e.state in table.finals, f"{e.describe()}: completed outside a final state"
        if e.kind == FAILED:
            assert e.error_type is not None and e.error_message is not None, e.describe()
    for e in events:
        if e.kind == RETRY:
            assert any(o.kind in (START, STEP, RETRY) and o.retries == e.retries - 1 and o.state == e.state
                       and o.event == e.event for o in by_step[e.steps]), f"{e.describe()}: retry of nothing"

    dispatched = sorted({(e.steps, e.state, e.event) for e in events if e.kind in (START, STEP)})
    ends = [e for e in events if e.kind == COMPLETED]
    for (n, s, ev), (m, t, _) in zip(dispatched, dispatched[1:], strict=False):
        assert t in _after(table, n, s, ev, m, last_local_ok=False), f"step {n} {s}/{ev} cannot lead to step {m} in {t}"
    for c in ends:
        before = [d for d in dispatched if d[0] < c.steps]
        assert before, c.describe()
        n, s, ev = before[-1]
        assert c.state in _after(table, n, s, ev, c.steps, last_local_ok=True), f"{c.describe()} unreachable"


def _after(table: Table, n: int, state: str, event: str | None, m: int, *, last_local_ok: bool) -> set[str]:
    """States the machine can be in at appended step ``m`` given appended step ``n`` fired ``event``."""
    if event is None:  # start: step 1 stays in the initial state
        return {state} if m == 1 else set()
    target, local = table.moves[state][event]
    frontier = {(target, local)}
    for _ in range(m - n - 1):  # steps n+1 .. m-1 were skipped: each was entered locally
        frontier = {table.moves[s][e] for s, was_local in frontier if was_local and s not in table.finals
                    for e in table.moves[s]}
    return {s for s, was_local in frontier if last_local_ok or not was_local}
