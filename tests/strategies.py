"""Hypothesis strategies: valid machine definitions, user contexts and engine-shaped runs.

Definitions are plain dicts in the ``fsm.yaml`` shape (docs/CONTRACT.md §1), without actions.

The run model follows handlers/engine.py: what it appends for one machine, and what
``check_run`` verifies.

- ``start``: steps 0, retries 0, state = initial, event None. The event the initial do action
  returns rides on the next record: step 1, still in the initial state.
- ``step`` n (n >= 1): the machine is in ``state`` and fires ``event``, an event of that state,
  to its transition's ``target``; the next step is n + 1 in ``target``.
- a step whose own transition is ``local: true`` is run by the invocation that produced it,
  so its step record is *never appended*: the log jumps from n to n + 2 (or further along a
  chain of local transitions). If such a skipped step fails, its ``retry`` (retries 1) is
  appended all the same, with no retries-0 record before it.
- ``retry``: same steps/state/event as the failed attempt, retries + 1, while
  retries < ``max_retries``; then ``failed``.
- ``completed``: a step whose target is final: steps n + 1, retries 0, state = the final
  state, event None. (A do action returning None also completes, in a non-final state; the
  generator does not produce that.)
- ``failed``: steps/retries/state/event of the attempt that failed at ``max_retries``, with
  ``error_type``/``error_message``.
- ``aborted``: the last appended record with kind aborted (steps/retries/state/event kept),
  error_type "Aborted".
- a run may also stop anywhere (a machine still running; the log so far).

Appended records of a run grow strictly under the fold's order, so the fold of any
permutation of a run, with any duplicates, is its last record (``MachineRun.expected``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from eventlog.event import ABORTED, COMPLETED, FAILED, RETRY, START, STEP, Event

_LOWER = "abcdefghijklmnopqrstuvwxyz"
IDENT = st.builds(str.__add__, st.sampled_from(_LOWER), st.text(_LOWER + "0123456789_", max_size=7))
"""Names for machines, states and events: ``[a-z][a-z0-9_]{0,7}``."""
EVENT_NAMES = ("ok", "next", "fail", "retry", "done", "back", "loop", "go", "reject", "skip")
INT64 = st.integers(-(2**63), 2**64 - 1)

# ---------------------------------------------------------------- user contexts

# Any offset datetime.timezone takes, down to the microsecond (strictly within a day either way).
fixed_offsets = st.builds(
    dt.timezone,
    st.builds(dt.timedelta, microseconds=st.integers(-(24 * 3600 * 10**6) + 1, 24 * 3600 * 10**6 - 1)),
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


_EVENT_NAME = st.sampled_from(EVENT_NAMES) | IDENT
_LOCAL = st.sampled_from([None, False, True])


def _fresh_event(draw: Any, taken: Mapping[str, Any]) -> str:
    base = draw(_EVENT_NAME)
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
        local = draw(_LOCAL)
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
    tick = draw(st.floats(0.001, 30.0))
    pool = st.sampled_from(draw(st.lists(context_strategy, min_size=1, max_size=4)))  # contexts the run goes through
    out: list[Event] = []

    def emit(kind: str, steps: int, retries: int, state: str, event: str | None, **extra: Any) -> None:
        clock[0] += tick
        ctx = draw(pool)
        out.append(Event.create(kind, correlation_id, table.name, dhash, steps, retries, state, event,
                                clock[0], ctx, **extra))

    emit(START, 0, 0, table.initial, None)
    steps, state, event, appended = 0, table.initial, None, True
    while True:
        retries = 0
        for r in range(1, draw(st.integers(0, min(table.max_retries, 3))) + 1):
            emit(RETRY, steps, r, state, event, error_type="Boom", error_message=f"attempt {r - 1}")
            retries, appended = r, True
        end = draw(st.sampled_from(["go", "go", "go", "stop", "fail", "abort"])) if steps < max_steps else "stop"
        if end == "stop":
            break
        if end == "fail":
            for r in range(retries + 1, table.max_retries + 1):
                emit(RETRY, steps, r, state, event, error_type="Boom", error_message=f"attempt {r - 1}")
            emit(FAILED, steps, table.max_retries, state, event,
                 error_type=draw(st.sampled_from(["ValueError", "Boom"])), error_message=draw(st.text(max_size=20)))
            break
        if end == "abort" and appended:
            emit(ABORTED, steps, retries, state, event, error_type="Aborted", error_message="aborted by an operator")
            break
        # this step succeeded: on to the next one
        target = state if event is None else table.moves[state][event][0]
        steps += 1
        if target in table.finals:
            emit(COMPLETED, steps, 0, target, None)
            break
        state, event = target, draw(st.sampled_from(sorted(table.moves[target])))
        appended = not table.moves[state][event][1]
        if appended:
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
    """Assert that one machine's records fit the run model over ``machine``'s transition table.

    Records of consecutive steps must be joined by the table, every step missing from the log
    must have been a local one, and appended step records must not be local ones. Raises
    AssertionError naming the record.
    """
    table = Table.of(machine)
    dispatchable = {e for e in events if e.kind in (START, STEP, RETRY)}
    attempts = {(e.steps, e.retries) for e in dispatchable}
    at_step: dict[int, set[tuple[str, str | None]]] = {}
    for e in events:
        where = e.describe()
        assert e.machine == table.name, where
        assert e.state in table.moves, f"{where}: no state {e.state!r}"
        if e.kind in (START, STEP, RETRY, FAILED):
            at_step.setdefault(e.steps, set()).add((e.state, e.event))
            if e.steps == 0:
                assert (e.state, e.event) == (table.initial, None), where
            else:
                assert e.event in table.moves[e.state], f"{where}: no such event"
        if e.kind == START:
            assert (e.steps, e.retries) == (0, 0), where
        elif e.kind == STEP:
            assert e.retries == 0 and not table.moves[e.state][e.event][1], f"{where}: a local step was appended"
        elif e.kind == RETRY:
            skipped_local = e.retries == 1 and e.steps > 0 and table.moves[e.state][e.event][1]
            assert (e.steps, e.retries - 1) in attempts or skipped_local, f"{where}: retry of nothing"
        elif e.kind == COMPLETED:
            assert e.state in table.finals and e.event is None, f"{where}: completed outside a final state"
        elif e.kind == FAILED:
            assert e.error_type is not None and e.error_message is not None, where
        elif e.kind == ABORTED:
            assert any(d.key == e.key and (d.state, d.event) == (e.state, e.event) for d in dispatchable), where
    for n, seen in at_step.items():
        assert len(seen) == 1, f"step {n} recorded in different states/events: {sorted(map(str, seen))}"

    chain = sorted((n, *next(iter(seen))) for n, seen in at_step.items())
    for (n, s, ev), (m, t, _) in zip(chain, chain[1:], strict=False):
        assert t in _after(table, n, s, ev, m), f"step {n} ({s!r} on {ev!r}) cannot lead to step {m} in {t!r}"
    for c in (e for e in events if e.kind == COMPLETED):
        before = [x for x in chain if x[0] < c.steps]
        assert before, c.describe()
        n, s, ev = before[-1]
        assert c.state in _after(table, n, s, ev, c.steps), f"{c.describe()}: not reachable from step {n}"


def _after(table: Table, n: int, state: str, event: str | None, m: int) -> set[str]:
    """States step ``m`` can be in, given step ``n`` fired ``event`` from ``state`` and every step
    in between was skipped (so was local)."""
    states = {state if event is None else table.moves[state][event][0]}
    for _ in range(m - n - 1):
        states = {t for s in states if s not in table.finals for t, local in table.moves[s].values() if local}
    return states


# ---------------------------------------------------------------- exact comparison of context values


def assert_same_value(a: Any, b: Any, path: str = "context") -> None:
    """Assert ``b`` is ``a`` come back from the log: same types all the way down, same values.

    Stricter than ``==``: Decimal keeps its digits and exponent, floats their sign of zero,
    aware datetimes their wall time, offset, zone name and (where it matters) fold. A naive
    datetime's fold is not kept (the wire form is its ISO text), and ``==`` ignores it too.
    """
    assert type(a) is type(b), f"{path}: {type(a).__name__} came back as {type(b).__name__}"
    if type(a) is dict:
        assert list(a) == list(b), f"{path}: keys {list(a)!r} came back as {list(b)!r}"
        for k in a:
            assert type(k) is type(next(x for x in b if x == k)), f"{path}: key {k!r} changed type"
            assert_same_value(a[k], b[k], f"{path}[{k!r}]")
    elif type(a) is list:
        assert len(a) == len(b), f"{path}: length {len(a)} came back as {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_value(x, y, f"{path}[{i}]")
    elif type(a) is float:
        assert a == b and math.copysign(1.0, a) == math.copysign(1.0, b), f"{path}: {a!r} came back as {b!r}"
    elif type(a) is Decimal:
        assert a.as_tuple() == b.as_tuple(), f"{path}: {a!r} came back as {b!r}"
    elif type(a) is dt.datetime:
        assert a.replace(tzinfo=None, fold=0) == b.replace(tzinfo=None, fold=0), f"{path}: {a!r} came back as {b!r}"
        assert a.utcoffset() == b.utcoffset(), f"{path}: offset of {a!r} came back as {b!r}"
        assert getattr(a.tzinfo, "key", None) == getattr(b.tzinfo, "key", None), f"{path}: zone of {a!r} -> {b!r}"
        assert (a.tzinfo is None) == (b.tzinfo is None), f"{path}: {a!r} came back as {b!r}"
        if a.tzinfo is not None and a.replace(fold=1 - a.fold).utcoffset() != a.utcoffset():
            assert a.fold == b.fold, f"{path}: fold of {a!r} came back as {b!r}"
        assert a == b, f"{path}: {a!r} came back as {b!r}"
    else:
        assert a == b, f"{path}: {a!r} came back as {b!r}"
