"""The fold is a join: any order, any duplicates, any snapshot split give the same state."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog.codec import encode
from eventlog.event import (
    ABORTED,
    COMPLETED,
    DISPATCHABLE,
    FAILED,
    KINDS,
    RETRY,
    START,
    STEP,
    TERMINAL,
    Event,
)
from projections.errors import FoldError
from projections.fold import fold, fold_all, fold_records
from projections.state import RUNNING, MachineState, Snapshot, decode_snapshot, encode_snapshot
from tests.strategies import Runs, Table, check_run, definition_hash, machine_runs, runs, small_contexts


@st.composite
def shuffled_with_duplicates(draw: Any, events: list[Event]) -> list[Event]:
    dupes = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    return draw(st.permutations(events + dupes))


def expected(r: Runs) -> dict[str, Event]:
    return {m.correlation_id: m.expected for m in r.runs}


def lasts(states: dict[str, MachineState]) -> dict[str, Event]:
    return {cid: s.last for cid, s in states.items()}


@given(runs(), st.data())
def test_any_order_and_any_duplicates_give_the_same_state(r, data):
    mixed = data.draw(shuffled_with_duplicates(r.events))
    assert lasts(fold_all({}, mixed)) == expected(r)
    for m in r.runs:
        mine = [e for e in mixed if e.correlation_id == m.correlation_id]
        assert fold(None, mine).last == m.expected
        assert fold(None, reversed(mine)).last == m.expected


@given(runs(), st.data())
def test_snapshot_plus_tail_equals_the_whole_for_every_split(r, data):
    mixed = data.draw(shuffled_with_duplicates(r.events))
    whole = fold_all({}, mixed)
    for k in range(len(mixed) + 1):
        head, tail = mixed[:k], mixed[k:]
        assert fold_all(fold_all({}, head), tail) == whole
        for cid, state in fold_all({}, head).items():
            snap = decode_snapshot(encode_snapshot(Snapshot(state, f"pos-{k}", state.definition_hash)))
            assert snap.state == state and snap.position == f"pos-{k}"
            rest = [e for e in tail if e.correlation_id == cid]
            assert fold(snap.state, rest) == whole[cid]


@given(runs(), st.data())
def test_fold_records_on_bytes_equals_fold_all_on_events(r, data):
    mixed = data.draw(shuffled_with_duplicates(r.events))
    raw = [encode(e) for e in mixed]
    assert fold_records({}, raw) == fold_all({}, mixed)
    k = data.draw(st.integers(0, len(mixed)))
    start = fold_all({}, mixed[:k])
    assert fold_records(start, raw[k:]) == fold_all(start, mixed[k:]) == fold_all({}, mixed)


@given(runs(), st.data())
def test_states_the_fold_did_not_change_are_returned_as_they_were(r, data):
    whole = fold_all({}, r.events)
    again = data.draw(shuffled_with_duplicates(r.events))
    for out in (fold_all(whole, again), fold_records(whole, [encode(e) for e in again])):
        assert all(out[cid] is whole[cid] for cid in whole)
    for cid, state in whole.items():
        assert fold(state, [e for e in again if e.correlation_id == cid]) is state


@given(runs(max_instances=1), st.data())
def test_terminal_is_absorbing(r, data):
    run = r.runs[0]
    log = run.events
    if not run.expected.terminal:  # end it the way an operator would
        log = [*log, run.expected.evolve(kind=ABORTED, error_type="Aborted", error_message="by hand")]
    end = fold(None, log)
    assert end.last == log[-1] and end.terminal
    later = data.draw(st.lists(
        st.builds(
            lambda kind, steps, retries, state: end.last.evolve(kind=kind, steps=steps, retries=retries, state=state,
                                                                event="x", error_type=None, error_message=None),
            st.sampled_from(sorted(DISPATCHABLE)), st.integers(0, 2**40), st.integers(0, 2**20), st.text(max_size=5),
        ),
        min_size=1, max_size=5,
    ))
    after = fold(end, later)
    assert after is end and after.status == end.last.kind
    assert fold(None, data.draw(st.permutations(log + later))) == end
    # nor does a terminal record after the end change how the machine ended
    ended_later = [e.evolve(kind=data.draw(st.sampled_from(sorted(TERMINAL))), steps=e.steps + end.steps + 1)
                   for e in later]
    assert fold(end, ended_later) is end
    assert fold_records({}, [encode(e) for e in data.draw(st.permutations(log + later + ended_later))]) == {
        end.correlation_id: end
    }


@given(runs(max_instances=1), st.data())
def test_any_terminal_beats_every_running_record(r, data):
    run = r.runs[0]
    running = [e for e in run.events if not e.terminal]
    kind = data.draw(st.sampled_from(sorted(TERMINAL)))
    anchor = data.draw(st.sampled_from(running))
    ended = anchor.evolve(kind=kind, error_type="Boom", error_message="late")
    state = fold(None, data.draw(st.permutations([*running, ended])))
    assert state.last == ended
    assert state.status == kind and state.terminal


@st.composite
def tied_pairs(draw: Any) -> tuple[Event, Event]:
    """Two different records of one machine with the same (steps, retries)."""
    r = draw(runs(max_instances=1))
    a = draw(st.sampled_from(r.runs[0].events))
    change = draw(st.sampled_from(["kind", "time", "context", "state", "event", "error", "hash"]))
    if change == "kind":
        b = a.evolve(kind=draw(st.sampled_from([k for k in KINDS if k != a.kind])))
    elif change == "time":
        b = a.evolve(time=a.time + draw(st.sampled_from([-1.5, 0.25, 1e3])))
    elif change == "context":
        b = a.evolve(context=draw(small_contexts))
    elif change == "state":
        b = a.evolve(state=a.state + "_other")
    elif change == "event":
        b = a.evolve(event=(a.event or "") + "_other")
    elif change == "error":
        b = a.evolve(error_type="Other", error_message=draw(st.text(max_size=10)))
    else:
        b = a.evolve(definition_hash=a.definition_hash + "0")
    return a, b


@given(tied_pairs(), st.data())
def test_two_records_with_the_same_counters_resolve_the_same_in_any_order(pair, data):
    a, b = pair
    ab, ba = fold(None, [a, b]), fold(None, [b, a])
    assert ab == ba and ab.last in (a, b)
    assert fold(fold(None, [a]), [b]) == fold(fold(None, [b]), [a]) == ab
    assert fold_records({}, [encode(a), encode(b)]) == fold_records({}, [encode(b), encode(a)]) == {a.correlation_id: ab}
    # the tie-break is one fixed rule, whatever else is folded alongside
    others = data.draw(st.lists(st.builds(lambda s: a.evolve(kind=START, steps=0, retries=0, time=s),
                                          st.floats(0, 1e9)), max_size=3))
    if a.steps or a.retries or a.kind != START:
        assert fold(None, data.draw(st.permutations([a, b, *others]))) == ab


@given(runs())
def test_every_folded_state_names_a_state_of_its_definition(r):
    for cid, state in fold_all({}, r.events).items():
        machine = r.machine(state.machine)
        table = Table.of(machine)
        assert state.state in table.moves
        assert state.definition_hash == definition_hash(machine)
        assert state.correlation_id == cid
        if state.status == RUNNING:
            assert state.last.kind in DISPATCHABLE and state.event in (set(table.moves[state.state]) | {None})
        if state.status == COMPLETED:
            assert state.state in table.finals
        if state.status == FAILED:
            assert state.error == f"{state.last.error_type}: {state.last.error_message}"


@given(runs())
def test_states_the_fold_goes_through_follow_the_transition_table(r):
    for run in r.runs:
        check_run(run.machine, run.events)
        seen: list[Event] = []
        state = None
        for e in run.events:  # the state after each appended record, as a reader polling the log sees it
            state = fold(state, [e])
            if not seen or seen[-1] != state.last:
                seen.append(state.last)
        assert seen == run.events
        check_run(run.machine, seen)


MACHINE = {
    "name": "order",
    "states": [
        {"name": "new", "initial": True, "transitions": [{"event": "ok", "target": "paid"}]},
        {"name": "paid", "transitions": [{"event": "ship", "target": "sent", "local": True},
                                         {"event": "hold", "target": "held"}]},
        {"name": "held", "transitions": [{"event": "go", "target": "paid"}]},
        {"name": "sent", "final": True},
    ],
}


def _rec(kind: str, steps: int, state: str, event: str | None, retries: int = 0) -> Event:
    return Event.create(kind, "o-1", "order", "h", steps, retries, state, event, float(steps))


def test_check_run_accepts_a_local_jump_and_refuses_impossible_logs():
    good = [_rec(START, 0, "new", None), _rec(STEP, 1, "new", "ok"), _rec(STEP, 2, "paid", "hold"),
            _rec(STEP, 3, "held", "go"), _rec(RETRY, 4, "paid", "ship", 1), _rec(COMPLETED, 5, "sent", None)]
    check_run(MACHINE, good)
    bad_logs = [
        [*good[:2], _rec(STEP, 2, "held", "go")],  # 'new' on 'ok' goes to 'paid'
        [*good[:2], _rec(STEP, 3, "paid", "hold")],  # step 2 missing, but 'ok' is not local
        [*good[:2], _rec(STEP, 2, "paid", "ship")],  # a local step is never appended
        [*good[:2], _rec(STEP, 2, "paid", "fly")],  # no such event
        [*good[:2], _rec(RETRY, 2, "paid", "hold", 1)],  # retry of an attempt that is not in the log
        [*good[:4], _rec(COMPLETED, 4, "held", None)],  # completed outside a final state
        [*good[:3], _rec(ABORTED, 2, "paid", "ship")],  # aborted is the last record as it was
    ]
    for log in bad_logs:
        with pytest.raises(AssertionError):
            check_run(MACHINE, log)


@given(machine_runs(MACHINE, "o-1"))
def test_runs_of_a_fixed_machine_fit_its_table(run):
    check_run(MACHINE, run.events)
    assert fold(None, run.events).last == run.expected


def test_fold_refuses_to_mix_machines():
    with pytest.raises(FoldError, match="fold_all"):
        fold(None, [_rec(START, 0, "new", None), _rec(START, 0, "new", None).evolve(correlation_id="o-2")])


def test_folding_nothing():
    assert fold(None, []) is None
    assert fold_all({}, []) == {} and fold_records({}, []) == {}
    s = fold(None, [_rec(START, 0, "new", None)])
    assert fold(s, []) is s
