"""The adversary: generated cases (inputs, delivery order, fault schedule) as hypothesis strategies.

A fault is keyed on the record it hits — machine ``#index`` of the case, at
step ``step`` — not on a moment of the run, so a schedule keeps its meaning
while hypothesis shrinks the rest of the case. The kinds:

- ``crash``: the worker dies after the step's actions ran and before the
  commit: nothing of the batch is appended, the leases are left to expire, and
  the records are delivered again to a new worker (same ``idempotency_key``);
- ``duplicate``: the record is delivered once more, later (the stream's
  at-least-once delivery);
- ``raise``: the step's do action raises after it ran (its effect happened,
  the answer was lost), so the engine retries the step; only on a first
  attempt, and only where the machine's ``max_retries`` allows a retry;
- ``abort``: an operator aborts the machine as its record is delivered.

Several machines of one case interleave: ``order`` picks which queued record
is delivered next (0, the default, is the oldest).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hypothesis import strategies as st

from .errors import SchemaError

KINDS = ("crash", "duplicate", "raise", "abort")
OUTCOME_KINDS = ("crash", "duplicate", "raise")  # faults that must not change a machine's outcome (P5)
WEIGHTS = {"crash": 3, "duplicate": 2, "raise": 3, "abort": 1}
STEP_HORIZON = 5  # faults aim at steps 0..5; a longer machine's later steps run fault-free


@dataclass(frozen=True)
class Fault:
    kind: str
    machine: int  # index of the machine in the case
    step: int  # the ``steps`` of the record it hits

    def describe(self) -> str:
        return f"{self.kind} at machine #{self.machine} step {self.step}"


@dataclass(frozen=True)
class Case:
    """One generated run: which machine, its inputs, the delivery order and the fault schedule."""

    machine: str
    contexts: tuple[dict[str, Any], ...]
    faults: tuple[Fault, ...] = ()
    order: tuple[int, ...] = ()  # the n-th delivery takes queued record order[n] % len(queue)
    batch: int = 1  # records per delivered batch

    def without_faults(self) -> Case:
        return Case(self.machine, self.contexts, (), self.order, self.batch)

    def describe(self) -> list[str]:
        lines = [f"machine {self.machine!r}, {len(self.contexts)} instance(s), batches of {self.batch}"]
        for i, ctx in enumerate(self.contexts):
            lines.append(f"context #{i}: {json.dumps(ctx, default=str, sort_keys=True)}")
        lines.append("faults: " + (", ".join(f.describe() for f in self.faults) or "none"))
        if any(self.order):
            lines.append(f"delivery order: {list(self.order)}")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "contexts": list(self.contexts),
                "faults": [{"kind": f.kind, "machine": f.machine, "step": f.step} for f in self.faults],
                "order": list(self.order), "batch": self.batch}


def faults(kinds: Sequence[str] = KINDS, *, machines: int = 1, max_faults: int = 4,
           horizon: int = STEP_HORIZON) -> st.SearchStrategy[tuple[Fault, ...]]:
    """Fault schedules: up to ``max_faults`` faults of ``kinds`` on ``machines`` machines' first steps."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown fault kind(s) {unknown}; known: {', '.join(KINDS)}")
    if not kinds or max_faults <= 0:
        return st.just(())
    weighted = [k for k in KINDS if k in kinds for _ in range(WEIGHTS[k])]  # aborts end runs early: fewer
    one = st.builds(Fault, st.sampled_from(weighted), st.integers(0, max(0, machines - 1)),
                    st.integers(0, horizon))
    return st.lists(one, max_size=max_faults, unique=True).map(tuple)


@st.composite
def _cases(draw: Any, machine: str, contexts: st.SearchStrategy, machines: st.SearchStrategy[int],
           kinds: Sequence[str], max_faults: int) -> Case:
    n = draw(machines)
    ctxs = tuple(draw(contexts) for _ in range(n))
    schedule = draw(faults(kinds, machines=n, max_faults=max_faults))
    order = tuple(draw(st.lists(st.integers(0, 7), max_size=12))) if n > 1 else ()
    batch = draw(st.integers(1, 3))
    return Case(machine, ctxs, schedule, order, batch)


def cases(machine: str, contexts: st.SearchStrategy | None = None, *, machines: int | st.SearchStrategy[int] = 1,
          faults: Sequence[str] | bool = True, max_faults: int = 4) -> st.SearchStrategy[Case]:
    """Cases for ``machine``: contexts from ``contexts`` (default ``{}``), ``machines`` instances
    interleaved (an int or a strategy), and fault schedules of the given kinds (``True``: all)."""
    ctx = contexts if contexts is not None else st.just({})
    count = st.just(machines) if isinstance(machines, int) else machines
    kinds = KINDS if faults is True else (() if faults is False else tuple(faults))
    return _cases(machine, ctx, count, kinds, max_faults)


def load_schema(schema: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """A JSON Schema from a dict or a file; raises ``SchemaError`` naming the file and what is wrong."""
    if isinstance(schema, Mapping):
        return dict(schema)
    path = Path(schema)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SchemaError(f"context schema {path}: cannot read it ({exc.strerror}); check the path",
                          setting="--context-schema") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"context schema {path}: not valid JSON ({exc.msg} at line {exc.lineno} column "
                          f"{exc.colno}); fix the file", setting="--context-schema") from None
    if not isinstance(doc, dict):
        raise SchemaError(f"context schema {path}: a JSON Schema is an object, got {type(doc).__name__}",
                          setting="--context-schema")
    return doc


def contexts_from_schema(schema: Mapping[str, Any] | str | Path) -> st.SearchStrategy[dict[str, Any]]:
    """Contexts that a JSON Schema (a dict or a file) accepts, generated by hypothesis-jsonschema.

    The schema must describe an object (a context is a dict); it is checked here,
    so a broken schema fails before any run."""
    doc = load_schema(schema)
    where = f"context schema {schema}" if not isinstance(schema, Mapping) else "context schema"
    kind = doc.get("type")
    if kind is not None and kind != "object" and not (isinstance(kind, list) and "object" in kind):
        raise SchemaError(f"{where}: a context is a JSON object, but the schema's type is {kind!r}; use "
                          '"type": "object"', setting="--context-schema")
    try:
        from hypothesis_jsonschema import from_schema
    except ImportError:
        raise SchemaError("contexts from a JSON Schema need hypothesis-jsonschema: pip install 'fsmlog[testing]'",
                          setting="--context-schema") from None
    import jsonschema

    try:
        jsonschema.validators.validator_for(doc).check_schema(doc)
    except jsonschema.SchemaError as exc:
        at = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise SchemaError(f"{where} is not a valid JSON Schema at {at}: {exc.message}; fix the schema",
                          setting="--context-schema") from None
    try:
        strategy = from_schema({**doc, "type": "object"})
        strategy.validate()  # hypothesis-jsonschema checks the schema lazily; make it say so now
    except Exception as exc:
        text = " ".join(str(exc).split())[:300]
        raise SchemaError(f"{where} cannot be generated from: {type(exc).__name__}: {text}; fix the schema",
                          setting="--context-schema") from None
    if strategy.is_empty:
        raise SchemaError(f"{where} cannot be generated from: no context satisfies it; fix the schema",
                          setting="--context-schema")
    return cast("st.SearchStrategy[dict[str, Any]]", strategy)  # "type": "object" above: only dicts
