"""The built-in properties, judged on the fault-free and the faulty run of one case, and the search for
cases that break them (hypothesis generates, runs and shrinks them).

- P1: every event an action returns has a transition from its state;
- P2: with no faults, every machine ends within ``max_steps`` steps;
- P3: a step re-run from the same record after a simulated crash returns the same event and
  context (re-execution determinism: what makes at-least-once safe). A fault-free run whose
  outcome differs from another fault-free run of the same inputs breaks it too;
- P4: the context stays encodable (the engine fails a machine whose context cannot travel);
- P5: faults do not change outcomes: status, state and context at the end equal the fault-free
  run's (judged on one-machine cases: machines that share a store may race each other);
- P6: the fold of the run's log equals the engine's view of every machine.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventlog.event import FAILED

from .adversary import KINDS, OUTCOME_KINDS, Case, cases
from .recording import AppliedFault, Invocation, Run
from .runner import Kit

PROPERTIES = {
    "P1": "every event an action returns has a transition from its state",
    "P2": "with no faults, the machine ends within max-steps",
    "P3": "a step re-run after a crash returns the same event and context",
    "P4": "the context stays encodable",
    "P5": "faults do not change the outcome (status, state, context)",
    "P6": "the fold of the log equals the engine's view",
}
UNENCODABLE = ("ContextValueError", "RecordTooLarge")


@dataclass(frozen=True)
class Violation:
    """One property broken by one case: where (machine, state, event) and how."""

    prop: str
    machine: str
    state: str
    event: str | None
    detail: str
    case: Case
    applied: tuple[AppliedFault, ...] = ()
    correlation_id: str = ""
    index: int = 0  # the machine's index in the case
    run: Run | None = field(default=None, compare=False, repr=False)
    log_path: Path | None = None  # a copy of the run's embedded file: `fsmlog history --db PATH ID`

    def headline(self) -> str:
        at = f"state {self.state!r}" + (f", event {self.event!r}" if self.event else "")
        return f"{self.prop} failed: machine {self.machine!r}, {at}"

    def as_dict(self) -> dict[str, Any]:
        return {"property": self.prop, "statement": PROPERTIES[self.prop], "machine": self.machine,
                "state": self.state, "event": self.event, "detail": self.detail,
                "context": self.case.contexts[self.index] if self.case.contexts else {},
                "case": self.case.as_dict(), "faults_applied": [a.describe() for a in self.applied],
                "correlation_id": self.correlation_id,
                "log": str(self.log_path) if self.log_path else None}


def _same(a: Any, b: Any) -> bool:
    return a == b and type(a) is type(b)


def _diff(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    a, b = a or {}, b or {}
    keys = sorted({k for k in a.keys() | b.keys() if not (k in a and k in b and _same(a[k], b[k]))}, key=str)
    parts = [f"{k}: {a.get(k, '(absent)')!r} then {b.get(k, '(absent)')!r}" for k in keys[:3]]
    return "; ".join(parts) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def p1_declared_events(run: Run) -> list[Violation]:
    out = []
    mdef = None
    for inv in run.invocations:
        if inv.role != "do" or inv.error and not inv.injected or inv.returned is None:
            continue
        mdef = mdef or run.definitions.machine(inv.machine)
        st = mdef.state(inv.state)
        if st is None or st.final:
            continue
        if not isinstance(inv.returned, str) or st.transition(inv.returned) is None:
            known = ", ".join(t.event for t in st.transitions) or "none"
            out.append(_violation("P1", run, inv.correlation_id, inv.state, inv.returned if isinstance(
                inv.returned, str) else repr(inv.returned),
                f"{inv.action} returned {inv.returned!r}; the state's events: {known}"))
            break
    return out


def p2_ends(run: Run, max_steps: int) -> list[Violation]:
    if not run.exceeded:
        return []
    cid = run.exceeded if run.exceeded in {m.correlation_id for m in run.machines} else run.machines[0].correlation_id
    last = run.records_of(cid)[-1] if run.records_of(cid) else None
    return [_violation("P2", run, cid, last.state if last else "?", last.event if last else None,
                       f"still running after {max_steps} steps with no fault injected")]


def p3_rerun_determinism(run: Run) -> list[Violation]:
    for crashed in sorted(run.crashed):
        first = [i for i in run.invocations if i.execution == crashed]
        for cid in dict.fromkeys(i.correlation_id for i in first):
            before = [i for i in first if i.correlation_id == cid]
            after = _rerun_of(run, cid, before[0], crashed)
            for a, b in zip(before, after):
                if (a.error and not a.injected) or (b.error and not b.injected) or a.action != b.action:
                    break  # a raise is no return: nothing to compare from here on
                if not _same(a.returned, b.returned) or a.context_out != b.context_out:
                    what = (f"returned {a.returned!r}, then {b.returned!r} on the re-run"
                            if not _same(a.returned, b.returned) else
                            f"left a different context on the re-run ({_diff(a.context_out, b.context_out)})")
                    return [_violation("P3", run, cid, a.state, a.event, f"{a.action} {what}")]
    return []


def _rerun_of(run: Run, cid: str, first: Invocation, crashed: int) -> list[Invocation]:
    later = [i for i in run.invocations if i.correlation_id == cid and i.execution > crashed]
    for inv in later:
        if inv.attempt == first.attempt:
            return [i for i in later if i.execution == inv.execution]
    return []


def p4_encodable(run: Run) -> list[Violation]:
    for ev in run.log:
        if ev.kind == FAILED and ev.error_type in UNENCODABLE:
            return [_violation("P4", run, ev.correlation_id, ev.state, ev.event,
                               f"{ev.error_type}: {ev.error_message}")]
    return []


def p5_outcome(reference: Run, faulty: Run) -> list[Violation]:
    if faulty is reference or len(faulty.machines) != 1:
        return []
    ref, got = reference.machines[0], faulty.machines[0]
    if got.aborted or ref.final is None or got.final is None:
        return []
    a, b = ref.final, got.final
    if (a.status, a.state) == (b.status, b.state) and a.last.context == b.last.context:
        return []
    hit = [f for f in faulty.applied if f.kind in OUTCOME_KINDS]
    if (a.status, a.state) != (b.status, b.state):
        what = f"ended {b.status} in {b.state!r}, the fault-free run {a.status} in {a.state!r}"
    else:
        what = f"its context at the end differs ({_diff(a.last.context, b.last.context)})"
    if not hit:  # the same inputs, no fault met: the machine's own actions do not repeat themselves
        return [_violation("P3", faulty, got.correlation_id, b.state, b.event,
                           f"run again from the same inputs with no fault, {what}")]
    return [_violation("P5", faulty, got.correlation_id, b.state, b.event, f"under faults, {what}")]


def p6_fold(run: Run) -> list[Violation]:
    for m in run.machines:
        a = m.final.last if m.final else None
        b = m.folded.last if m.folded else None
        if a != b:
            where = b or a
            return [_violation("P6", run, m.correlation_id, where.state if where else "?",
                               where.event if where else None,
                               f"engine says {a.describe() if a else 'nothing'}, the fold "
                               f"{b.describe() if b else 'nothing'}")]
    return []


def judge(reference: Run, faulty: Run, max_steps: int) -> list[Violation]:
    """Every property the pair of runs breaks, P1 first."""
    found = p1_declared_events(reference) + p1_declared_events(faulty)
    found += p2_ends(reference, max_steps)
    if reference.exceeded:
        return found
    found += p3_rerun_determinism(faulty)
    found += p4_encodable(reference) + p4_encodable(faulty)
    found += p5_outcome(reference, faulty)
    found += p6_fold(reference) + p6_fold(faulty)
    return sorted(found, key=lambda v: v.prop)


def _violation(prop: str, run: Run, cid: str, state: str, event: str | None, detail: str) -> Violation:
    index = next((m.index for m in run.machines if m.correlation_id == cid), 0)
    return Violation(prop, run.case.machine, state, event, detail, run.case,
                     tuple(a for a in run.applied if a.index == index), cid, index, run)


# ---------------------------------------------------------------------- the search


class PropertyFailed(AssertionError):
    """Raised inside the hypothesis search; one subclass per property, so each is shrunk on its own."""

    violation: Violation


_FAILED = {p: type(f"{p}Failed", (PropertyFailed,), {}) for p in PROPERTIES}


@dataclass
class Report:
    """What a search tried and what it found, for one machine."""

    machine: str
    examples: int = 0  # cases generated and run (shrinking included)
    runs: int = 0
    faults: Counter = field(default_factory=Counter)  # faults that met their record, by kind
    violations: list[Violation] = field(default_factory=list)
    seconds: float = 0.0
    seed: int | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    def properties(self) -> list[str]:
        return sorted({v.prop for v in self.violations})

    def lines(self, width: int = 80) -> list[str]:
        """The report as text lines of at most ``width`` columns: the verdict, what was tried, and for each
        failed property its machine, state, event, shrunk case and the log kept for it."""
        faults = ", ".join(f"{k} {n}" for k, n in sorted(self.faults.items())) or "none met a record"
        verdict = "ok" if self.ok else f"FAILED {', '.join(self.properties())}"
        out = _fill(f"{self.machine}: {verdict} - {self.examples} cases, {self.runs} runs, {self.seconds:.1f}s; "
                    f"faults injected: {faults}", width, "")
        for v in self.violations:
            out += _fill(v.headline(), width, "")
            out += _fill(v.detail, width)
            for i, ctx in enumerate(v.case.contexts):
                mark = " (this one)" if i == v.index and len(v.case.contexts) > 1 else ""
                out += _fill(f"context #{i}{mark}: {json.dumps(ctx, default=str, sort_keys=True)}", width)
            out += _fill("faults: " + ("; ".join(a.describe() for a in v.applied) or "none"), width)
            if v.case.order and len(v.case.contexts) > 1:
                out += _fill(f"delivery order: {list(v.case.order)}, batches of {v.case.batch}", width)
            if v.log_path is not None:
                out += _fill(f"log: fsmlog history --db {_shown(v.log_path)} {v.correlation_id}", width)
        return out

    def assert_ok(self) -> None:
        """Fail a test with the report when a property failed."""
        if not self.ok:
            raise AssertionError("\n".join(self.lines()))

    def as_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "ok": self.ok, "examples": self.examples, "runs": self.runs,
                "faults_injected": dict(sorted(self.faults.items())), "seconds": round(self.seconds, 3),
                "seed": self.seed, "violations": [v.as_dict() for v in self.violations]}


def _fill(text: str, width: int, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_on_hyphens=False) or [indent]


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_case(kit: Kit, case: Case) -> tuple[list[Violation], Run, Run]:
    """Run a case fault-free and with its faults; every property the two runs break."""
    reference, faulty = kit.run_pair(case)
    return judge(reference, faulty, kit.max_steps), reference, faulty


def search(kit: Kit, machine: str, *, contexts: Any = None, examples: int = 50, seed: int | None = None,
           machines: int = 3, kinds: tuple[str, ...] = KINDS, keep: str | os.PathLike[str] | None = None,
           progress: Callable[[Report], None] | None = None) -> Report:
    """Generate ``examples`` cases for ``machine``, check P1-P6 on each, shrink what fails.

    Each broken property is reported once, with its shrunk case; when ``keep``
    names a directory, the failing run's embedded file is copied there as
    ``<machine>-<property>.db``."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    kit.machine(machine)
    report = Report(machine, seed=seed if seed is not None else random.SystemRandom().randrange(2**32))
    keep_dir = Path(keep).absolute() if keep is not None else None
    found: dict[str, Violation] = {}
    started = time.monotonic()
    # one machine half the time: P5 is judged on one-machine cases
    count = st.sampled_from([1] * max(1, machines - 1) + list(range(2, machines + 1))) if machines > 1 else 1
    strategy = cases(machine, contexts, machines=count, faults=kinds)

    @settings(max_examples=max(1, examples), deadline=None, database=None, verbosity=Verbosity.quiet,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=True,
              phases=(Phase.generate, Phase.shrink))
    @given(case=strategy)
    def one(case: Case) -> None:
        violations, reference, faulty = check_case(kit, case)
        report.examples += 1
        report.runs += 1 if faulty is reference else 2
        report.faults.update(a.kind for a in faulty.applied if faulty is not reference)
        if progress is not None:
            progress(report)
        if not violations:
            return
        v = violations[0]
        if keep_dir is not None and v.run is not None:
            keep_dir.mkdir(parents=True, exist_ok=True)
            target = keep_dir / f"{machine}-{v.prop}.db"
            shutil.copyfile(v.run.db_path, target)
            v = _with_log(v, target)
        found[v.prop] = v
        error = _FAILED[v.prop](v.headline())
        error.violation = v
        raise error

    test = hypothesis_seed(report.seed)(one)
    try:
        test()
    except BaseException as exc:  # noqa: B036 - hypothesis groups several failures, or calls them flaky
        caught = list(_violations_in(exc))
        if not caught:
            raise
        for v in caught:  # the last raise of a property is its shrunk case's (hypothesis replays it last)
            found[v.prop] = v
    report.violations = [found[p] for p in sorted(found)]
    report.seconds = time.monotonic() - started
    return report


def _with_log(v: Violation, path: Path) -> Violation:
    from dataclasses import replace

    return replace(v, log_path=path)


def _violations_in(exc: BaseException) -> list[Violation]:
    if isinstance(exc, PropertyFailed):
        return [exc.violation]
    out: list[Violation] = []
    for inner in getattr(exc, "exceptions", ()) or ():
        out.extend(_violations_in(inner))
    return out
