"""replay.rebuild on the embedded SQLite backends: snapshot + tail equals a fold of the whole history."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from eventlog.codec import encode
from eventlog.errors import FsmlogError
from eventlog.event import COMPLETED, RETRY, START, STEP, Event
from eventlog.log import OutRecord
from eventlog.settings import load_settings
from handlers.wiring import open_services
from projections.definition import from_dict
from projections.fold import fold, fold_all
from projections.state import Snapshot, encode_snapshot
from replay.errors import ReplayError, UnknownCorrelationId
from replay.rebuild import rebuild, redispatch, redispatch_many
from replay.scan import parse_duration, scan
from tests.strategies import runs

SOURCES = ("STREAM", "CHECKPOINT", "RETRY", "CACHE", "ENVIRONMENT", "METRICS", "DEAD_LETTER")


def open_sqlite(directory: Path):
    url = f"sqlite:///{directory.resolve() / 'fsm.db'}"  # an absolute path: sqlite:////abs/fsm.db
    settings = load_settings(environ={}, **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES})
    return open_services(settings)


@pytest.fixture
def services(tmp_path):
    svc = open_sqlite(tmp_path)
    yield svc
    svc.close()


def history(cid: str, steps: int, *, t0: float = 1_700_000_000.0, complete: bool = False) -> list[Event]:
    out = [Event.create(START, cid, "order", "h1", 0, 0, "received", None, t0, {"n": 0})]
    for i in range(1, steps + 1):
        out.append(Event.create(STEP, cid, "order", "h1", i, 0, f"s{i}", "go", t0 + i, {"n": i}))
        if i % 3 == 0:  # a failed attempt, then its retry
            out.append(Event.create(RETRY, cid, "order", "h1", i, 1, f"s{i}", "go", t0 + i + 0.5, {"n": i},
                                    error_type="Boom", error_message="first try"))
    if complete:
        out.append(Event.create(COMPLETED, cid, "order", "h1", steps + 1, 0, "done", None, t0 + steps + 1))
    return out


def append_interleaved(services, *histories: list[Event], seed: int = 7) -> dict[Event, str]:
    """Append the histories interleaved (each in its own order); returns each record's position."""
    rng = random.Random(seed)
    queues = [list(h) for h in histories]
    order: list[Event] = []
    while any(queues):
        q = rng.choice([q for q in queues if q])
        order.append(q.pop(0))
    positions = services.log.append([OutRecord(e.correlation_id, encode(e)) for e in order])
    return dict(zip(order, positions, strict=True))


def save_snapshot(services, events: list[Event], positions: dict[Event, str]) -> Snapshot:
    state = fold(None, events)
    snap = Snapshot(state, positions[events[-1]], state.definition_hash)
    assert services.checkpoints.save(state.correlation_id, state.version, encode_snapshot(snap))
    return snap


@pytest.mark.parametrize("cut", [1, 2, 5, 9, 13])
def test_snapshot_plus_tail_equals_full_fold(services, cut):
    mine = history("m-1", 10)
    other = history("m-2", 6, complete=True)
    positions = append_interleaved(services, mine, other)
    snap = save_snapshot(services, mine[:cut], positions)

    got = rebuild("m-1", services)

    assert got.rebuilt_state == fold(None, mine)
    assert got.snapshot_state == snap.state
    assert list(got.tail_events) == mine[cut:]  # only what came after the snapshot, none of m-2's
    assert got.position == (positions[mine[-1]] if cut < len(mine) else snap.position)
    assert got.bad_records == 0


def test_without_a_snapshot_rebuild_reads_from_the_beginning(services):
    mine = history("m-1", 4, complete=True)
    append_interleaved(services, mine, history("m-2", 3))

    got = rebuild("m-1", services)

    assert got.snapshot_state is None and got.snapshot is None
    assert list(got.tail_events) == mine
    assert got.rebuilt_state == fold(None, mine)
    assert got.rebuilt_state.status == "completed"


def test_a_snapshot_with_an_empty_tail_is_the_answer(services):
    mine = history("m-1", 3)
    positions = append_interleaved(services, mine)
    snap = save_snapshot(services, mine, positions)
    got = rebuild("m-1", services)
    assert got.tail_events == () and got.rebuilt_state == snap.state and got.position == snap.position


def test_unknown_id_is_a_clear_replay_error(services):
    append_interleaved(services, history("m-1", 2))
    with pytest.raises(UnknownCorrelationId) as info:
        rebuild("no-such-machine", services)
    err = info.value
    assert isinstance(err, ReplayError) and isinstance(err, FsmlogError)
    assert "'no-such-machine'" in str(err) and "no snapshot" in str(err)


def test_bad_records_in_the_tail_are_counted_and_skipped(services):
    mine = history("m-1", 2)
    services.log.append([OutRecord("m-1", encode(mine[0])), OutRecord("m-1", b"\xc1garbage"),
                         OutRecord("m-1", encode(mine[1])), OutRecord("m-1", encode(mine[2]))])
    got = rebuild("m-1", services)
    assert got.bad_records == 1 and got.rebuilt_state == fold(None, mine)


def test_definitions_that_lack_the_machine_are_refused(services):
    append_interleaved(services, history("m-1", 1))
    defs = from_dict({"machines": [{"name": "other", "states": [
        {"name": "a", "initial": True, "transitions": [{"event": "go", "target": "b"}]},
        {"name": "b", "final": True}]}]}, check_actions=False)
    with pytest.raises(ReplayError, match="'order'"):
        rebuild("m-1", services, definitions=defs)


def test_redispatch_appends_the_pending_step_as_a_retry(services):
    mine = history("m-1", 2)
    append_interleaved(services, mine)
    before = rebuild("m-1", services)

    out = redispatch(before, services, clock=lambda: 1_800_000_000.0)

    pending = mine[-1]
    assert out.kind == RETRY and out.retries == pending.retries + 1
    assert (out.steps, out.state, out.event, out.context) == (pending.steps, pending.state, pending.event,
                                                              pending.context)
    assert out.time == 1_800_000_000.0
    after = rebuild("m-1", services)
    assert after.rebuilt_state.last == out  # the retry is what the machine now waits on


def test_redispatch_leaves_an_ended_machine_alone(services):
    append_interleaved(services, history("m-1", 2, complete=True))
    before = rebuild("m-1", services)
    assert redispatch(before, services) is None
    assert len(services.log.read(None, 100)) == 4


@hsettings(max_examples=40, deadline=None)
@given(generated=runs(max_instances=3, max_steps=8), data=st.data())
def test_any_snapshot_cut_of_any_history_rebuilds_to_the_full_fold(generated, data):
    with tempfile.TemporaryDirectory() as d:
        svc = open_sqlite(Path(d))
        try:
            order = data.draw(st.permutations(generated.events), label="append order")
            positions = svc.log.append([OutRecord(e.correlation_id, encode(e)) for e in order])
            at = dict(zip(order, positions, strict=True))
            for run in generated.runs:
                mine = [e for e in order if e.correlation_id == run.correlation_id]
                cut = data.draw(st.integers(0, len(mine)), label=f"cut of {run.correlation_id}")
                if cut:
                    state = fold(None, mine[:cut])
                    snap = Snapshot(state, at[mine[cut - 1]], state.definition_hash)
                    svc.checkpoints.save(run.correlation_id, state.version, encode_snapshot(snap))
                got = rebuild(run.correlation_id, svc)
                assert got.rebuilt_state == fold(None, run.events)
                assert list(got.tail_events) == mine[cut:]
        finally:
            svc.close()


def test_redispatch_many_is_a_dry_run_unless_told(services):
    append_interleaved(services, history("m-1", 2), history("m-2", 1, complete=True))
    before = len(services.log.read(None, 100))

    planned = redispatch_many(["m-1", "m-2"], services, clock=lambda: 5.0)
    assert len(services.log.read(None, 100)) == before  # nothing appended
    (r1, would1), (r2, would2) = planned
    assert would1.kind == RETRY and would1.retries == 1 and would1.steps == r1.rebuilt_state.steps
    assert would2 is None and r2.rebuilt_state.status == "completed"

    done = redispatch_many(["m-1", "m-2"], services, clock=lambda: 5.0, dry_run=False)
    assert [ev for _, ev in done] == [would1, None]
    assert len(services.log.read(None, 100)) == before + 1


def test_scan_skips_bad_records_and_lists_stalled_machines_by_age(services):
    stuck = history("m-old", 2, t0=1_000.0)
    fresh = history("m-new", 2, t0=9_000.0)
    ended = history("m-end", 1, t0=1_000.0, complete=True)
    append_interleaved(services, stuck, fresh, ended)
    services.log.append([OutRecord("junk", b"\xc1")])

    result = scan(services.log, services.checkpoints, now=9_300.0, stalled_after_s=600, batch=4)

    assert result.records == len(stuck) + len(fresh) + len(ended) + 1 and result.bad_records == 1
    assert result.states == fold_all({}, stuck + fresh + ended)
    assert [(s.correlation_id, s.stuck_s) for s in result.stalled] == [("m-old", 9_300.0 - stuck[-1].time)]
    assert result.stalled[0].as_row()["last_event"] == "go"


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0),
                                               ("1d", 86400.0), ("1h30m", 5400.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "15q", "5m3", "m"])
def test_bad_durations_are_replay_errors(text):
    with pytest.raises(ReplayError):
        parse_duration(text)
