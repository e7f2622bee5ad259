"""The fold: log records in, machine state out. Pure: no I/O, no clock, no randomness.

The fold picks, per machine, the greatest record under one fixed total order,
so it is a join over a semilattice: any delivery order, any duplicates, and
any split into snapshot + tail give the same result.

The order:
- any terminal record (completed, failed, aborted) beats every running one:
  terminal states are absorbing;
- among running records, more ``steps`` wins, then more ``retries``, then the
  kind (start < step < retry), then a record that moves the machine beats one
  that only waits (a timer's record, or a ``wait`` state's idle record): an
  event sent from outside shows over the wait it ends;
- among terminal records, the *earliest* (fewest steps, then retries) wins, so
  nothing that happens after a machine ended changes how it ended;
- two different records with equal keys resolve by their encoded bytes, the
  greater wins: a fixed rule, never arrival order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from eventlog.codec import decode_fields, encode
from eventlog.event import KINDS, STEP, TERMINAL, Event

from .errors import FoldError
from .state import MachineState

_RANK = {k: i for i, k in enumerate(KINDS)}
_TERMINAL = TERMINAL


def order_key(kind: str, steps: int, retries: int, moves: bool = True) -> tuple[int, int, int, int, int]:
    if kind in _TERMINAL:
        return (1, -steps, -retries, _RANK[kind], 0)
    return (0, steps, retries, _RANK[kind], int(moves))


def moves(kind: str, event: str | None, due: float | None) -> bool:
    """False for a record that only waits: one with a due time, or a step record firing no event."""
    return due is None and (event is not None or kind != STEP)


def _wins(new: Event, old: Event) -> bool:
    """True when ``new`` beats ``old`` under the fold's order."""
    a = order_key(new.kind, new.steps, new.retries, moves(new.kind, new.event, new.due))
    b = order_key(old.kind, old.steps, old.retries, moves(old.kind, old.event, old.due))
    if a != b:
        return a > b
    return new != old and encode(new, limit=1 << 62) > encode(old, limit=1 << 62)


def fold(state: MachineState | None, events: Iterable[Event]) -> MachineState | None:
    """Fold one machine's events onto its state (``None`` for a machine not seen yet)."""
    best = state.last if state is not None else None
    for e in events:
        if best is None:
            best = e
            continue
        if e.correlation_id != best.correlation_id:
            raise FoldError(
                f"fold of machine {best.correlation_id!r} was given an event of machine "
                f"{e.correlation_id!r}; use fold_all for many machines"
            )
        if _wins(e, best):
            best = e
    if best is None:
        return None
    if state is not None and best is state.last:
        return state
    return MachineState(best)


def fold_all(states: Mapping[str, MachineState], events: Iterable[Event]) -> dict[str, MachineState]:
    """Fold events of many machines; returns a new mapping, ``states`` is left untouched."""
    best: dict[str, Event] = {cid: s.last for cid, s in states.items()}
    for e in events:
        cur = best.get(e.correlation_id)
        if cur is None or _wins(e, cur):
            best[e.correlation_id] = e
    return {cid: (states[cid] if cid in states and states[cid].last is ev else MachineState(ev))
            for cid, ev in best.items()}


def fold_records(states: Mapping[str, MachineState], records: Iterable[bytes]) -> dict[str, MachineState]:
    """Decode and fold raw log records of many machines.

    Each record is fully validated (a malformed one raises ``DecodeError``),
    but an ``Event`` object is built only for each machine's winner.
    """
    best: dict[str, tuple] = {}
    keys: dict[str, tuple] = {}
    for cid, s in states.items():
        e = s.last
        best[cid] = (e.kind, cid, e.machine, e.definition_hash, e.steps, e.retries, e.state, e.event,
                     e.time, e.context_raw, e.error_type, e.error_message, e.upgraded_from, e.due, e.event_id,
                     e.seen, e.parent)
        keys[cid] = order_key(e.kind, e.steps, e.retries, moves(e.kind, e.event, e.due))
    rank = _RANK
    terminal = _TERMINAL
    for data in records:
        f = decode_fields(data)
        kind = f[0]
        if kind in terminal:
            k = (1, -f[4], -f[5], rank[kind], 0)
        else:
            k = (0, f[4], f[5], rank[kind], int(f[13] is None and (f[7] is not None or kind != STEP)))
        cid = f[1]
        old = keys.get(cid)
        if old is None or k > old:
            keys[cid] = k
            best[cid] = f
        elif k == old and f != best[cid]:
            if encode(Event(*f), limit=1 << 62) > encode(Event(*best[cid]), limit=1 << 62):
                best[cid] = f
    out: dict[str, MachineState] = {}
    for cid, f in best.items():
        kept = states.get(cid)
        if kept is not None and kept.last == Event(*f):
            out[cid] = kept
        else:
            out[cid] = MachineState(Event(*f))
    return out
