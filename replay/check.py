"""Check running machines against new definitions before deploying them (``fsmlog replay check``).

Each running machine's next record is its latest one (a start, a step, or the
failed attempt whose retry waits). Under the new definitions the engine would:

- **handle** it: same definition hash;
- **upgrade** it: another hash, but its state and event still exist (the next
  record notes ``upgraded_from``);
- **park** it as a dead letter: its machine, state or event is gone.

The same rules as ``handlers.engine`` applies to each record it reads, here
applied to the fold of the whole log and the snapshots, without running
anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from eventlog.log import EventLog
from projections.definition import Definitions
from projections.errors import ProjectionError
from projections.state import MachineState

HANDLED, UPGRADED, PARKED = "handled", "upgraded", "parked"
OUTCOMES = (HANDLED, UPGRADED, PARKED)


@dataclass(frozen=True)
class Verdict:
    """What the new definitions would do with one running machine's next record."""

    correlation_id: str
    machine: str
    state: str
    event: str | None
    kind: str  # of the machine's latest record
    outcome: str  # handled, upgraded or parked
    record_hash: str
    new_hash: str | None  # the machine's hash in the new definitions (None: the machine is gone)
    reason: str | None = None  # why it would be parked

    def as_dict(self) -> dict[str, Any]:
        return {"correlation_id": self.correlation_id, "machine": self.machine, "state": self.state,
                "event": self.event, "kind": self.kind, "outcome": self.outcome, "record_hash": self.record_hash,
                "new_hash": self.new_hash, "reason": self.reason}


@dataclass(frozen=True)
class CheckReport:
    """Every running machine's verdict, and how many machines had ended (nothing left to judge)."""

    verdicts: list[Verdict]
    ended: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def parked(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.outcome == PARKED]

    def summary(self) -> list[dict[str, Any]]:
        """One row per machine name: running machines by outcome."""
        counts: dict[str, Counter] = {}
        for v in self.verdicts:
            counts.setdefault(v.machine, Counter())[v.outcome] += 1
        return [{"machine": name, **{o: counts[name][o] for o in OUTCOMES},
                 "running": sum(counts[name].values())} for name in sorted(counts)]

    def as_dict(self) -> dict[str, Any]:
        return {"running": len(self.verdicts), "ended": self.ended,
                "outcomes": {o: sum(v.outcome == o for v in self.verdicts) for o in OUTCOMES},
                "summary": self.summary(), "parked": [v.as_dict() for v in self.parked],
                "verdicts": [v.as_dict() for v in self.verdicts], "notes": list(self.notes)}


def judge(state: MachineState, definitions: Definitions) -> Verdict:
    """The verdict for one running machine (the rules ``handlers.engine`` applies to a record it reads)."""
    last = state.last

    def verdict(outcome: str, new_hash: str | None, reason: str | None = None) -> Verdict:
        return Verdict(last.correlation_id, last.machine, last.state, last.event, last.kind, outcome,
                       last.definition_hash, new_hash, reason)

    try:
        mdef = definitions.machine(last.machine)
    except ProjectionError:
        return verdict(PARKED, None, f"machine {last.machine!r} is not in the new definitions")
    st = mdef.state(last.state)
    if st is None:
        return verdict(PARKED, mdef.hash, f"state {last.state!r} is gone")
    if last.event is not None and st.transition(last.event) is None:
        return verdict(PARKED, mdef.hash, f"state {last.state!r} has no transition on event {last.event!r}")
    if last.definition_hash != mdef.hash:
        try:  # what the engine asks of a record written under another hash
            mdef.check_record(last.state, last.event, last.definition_hash)
        except ProjectionError as exc:
            return verdict(PARKED, mdef.hash, str(exc))
        return verdict(UPGRADED, mdef.hash)
    return verdict(HANDLED, mdef.hash)


def check_states(states: Iterable[MachineState], definitions: Definitions, notes: Iterable[str] = ()) -> CheckReport:
    """Judge every running machine of ``states`` (e.g. ``replay.scan(...).states.values()``)."""
    verdicts, ended = [], 0
    for state in states:
        if state.terminal:
            ended += 1
            continue
        verdicts.append(judge(state, definitions))
    order = {PARKED: 0, UPGRADED: 1, HANDLED: 2}
    verdicts.sort(key=lambda v: (order[v.outcome], v.machine, v.correlation_id))
    return CheckReport(verdicts, ended, list(notes))


def check(log: EventLog, checkpoints: Any, definitions: Definitions, *, now: float, progress: Any = None) -> CheckReport:
    """Fold the log (every readable side) and the snapshots, then judge every running machine."""
    from .scan import scan

    result = scan(log, checkpoints, now=now, stalled_after_s=float("inf"), progress=progress)
    return check_states(result.states.values(), definitions, result.notes)
