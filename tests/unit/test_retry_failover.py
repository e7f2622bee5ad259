"""Retry failover (issue 9, item 3): the timer polls both sides, a handle remembers its side, ``done``
deletes each handle on its own side only.

Before ``FailoverRetries`` the generic proxy asked only the primary for ``due`` once it answered
again (retries scheduled on the secondary during the outage were never run), and a ``done`` that
failed over deleted the primary's row ids on the secondary, where they name other retries.
Both sides here are embedded SQLite files; ``Switch`` makes a side fail on demand.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog.errors import BackendError, ServiceUnavailable
from eventlog.event import COMPLETED
from eventlog.settings import SOURCES, load_settings
from handlers.retries import DueRetry, RetryStore, ScheduledRetry
from handlers.retries.failover import FailoverRetries, RetryHandle, parse_handle
from handlers.retries.sqlite import SqliteRetries
from handlers.wiring import open_services
from tests.unit.engine_rig import Clock

HERE = __name__
CALLS: Counter = Counter()  # correlation id -> how many times the action ran


def fails_once(context, obj):
    CALLS[context.correlation_id] += 1
    if CALLS[context.correlation_id] == 1:
        raise RuntimeError("gateway down")
    return "ok"


def flaky_machine() -> dict:
    return {
        "name": "flaky",
        "max_retries": 3,
        "states": [
            {"name": "x", "initial": True, "do_action": f"{HERE}.fails_once",
             "transitions": [{"event": "ok", "target": "done"}]},
            {"name": "done", "final": True},
        ],
    }


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    yield
    CALLS.clear()


class Switch:
    """A retry store that raises ServiceUnavailable on every interface call while ``down``."""

    def __init__(self, backend):
        self.backend = backend
        self.name = backend.name
        self.down = False
        self.calls: Counter = Counter()

    def _check(self, method: str) -> None:
        self.calls[method] += 1
        if self.down:
            raise ServiceUnavailable(f"{self.name} is down ({method})")

    def schedule(self, retries):
        self._check("schedule")
        return self.backend.schedule(retries)

    def due(self, now, limit):
        self._check("due")
        return self.backend.due(now, limit)

    def done(self, handles):
        self._check("done")
        return self.backend.done(handles)

    def pending(self):
        return self.backend.pending()

    def close(self):
        self.backend.close()


def _ids(store: SqliteRetries) -> set[int]:
    return {int(r[0]) for r in store.db.execute("SELECT id FROM retries")}


@pytest.fixture
def sides(tmp_path):
    p = SqliteRetries(f"sqlite:///{tmp_path}/primary.db")
    s = SqliteRetries(f"sqlite:///{tmp_path}/secondary.db")
    yield p, s
    p.close()
    s.close()


@pytest.fixture
def store(sides):
    p, s = sides
    clock = Clock(0.0)
    fo = FailoverRetries(Switch(p), Switch(s), cooldown_s=30.0, clock=clock)
    fo.test_clock = clock
    return fo


def _sched(store, key: str, due: float, data: bytes | None = None) -> None:
    store.schedule([ScheduledRetry(key, data or key.encode(), due)])


# ---------------------------------------------------------------- the engine: a retry on the secondary is run


def test_retry_scheduled_on_the_secondary_while_the_primary_was_down_is_run_once_it_answers(rig_factory, tmp_path):
    rig = rig_factory([flaky_machine()], SECONDARY_RETRY_SOURCE=f"sqlite:///{tmp_path}/secondary.db")
    store = rig.services.retries
    assert isinstance(store, FailoverRetries) and isinstance(store, RetryStore)
    primary = store.primary = Switch(store.primary)
    primary.down = True
    cid = rig.engine.start("flaky")
    assert rig.engine.handle(rig.next_batch()).outcomes[-1]["outcome"] == "retry"
    assert (primary.backend.pending(), store.secondary.pending()) == (0, 1)  # the retry waits on the secondary

    primary.down = False  # the primary answers again (and its cool-down is over)
    store._open_until = float("-inf")
    rig.clock.t += 3600
    assert rig.engine.run_due_retries() == 1  # before: due asked the primary only, and found nothing
    assert primary.calls["due"] >= 1  # the primary was asked too
    assert (primary.backend.pending(), store.secondary.pending()) == (0, 0)
    rig.drive()
    assert CALLS[cid] == 2
    assert rig.full_fold(cid).status == COMPLETED


def test_open_services_wires_retry_failover_and_leaves_other_kinds_to_the_generic_proxy(tmp_path):
    first, second = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    values = {f"PRIMARY_{k}_SOURCE": first for k in SOURCES}
    services = open_services(load_settings(environ={}, SECONDARY_RETRY_SOURCE=second, SECONDARY_CACHE_SOURCE=second,
                                           FAILOVER_COOLDOWN_SECONDS=5.0, **values))
    try:
        assert isinstance(services.retries, FailoverRetries)
        assert services.retries.name == first and services.retries.cooldown_s == 5.0
        assert not isinstance(services.cache, FailoverRetries)
    finally:
        services.close()
    alone = open_services(load_settings(environ={}, **values))
    try:
        assert isinstance(alone.retries, SqliteRetries)
    finally:
        alone.close()


# ---------------------------------------------------------------- schedule


def test_schedule_goes_to_the_primary_and_fails_over_to_the_secondary(store):
    from eventlog.failover import FAILOVERS

    p, s = store.primary, store.secondary
    _sched(store, "a", 1.0)
    assert (p.pending(), s.pending()) == (1, 0)
    before = FAILOVERS["RETRY"]
    p.down = True
    _sched(store, "b", 1.0)
    assert (p.pending(), s.pending()) == (1, 1)
    assert store.failovers == 1 and FAILOVERS["RETRY"] - before == 1
    assert store.circuit_open
    p.down = False
    _sched(store, "c", 1.0)  # cool-down: still the secondary, without asking the primary
    assert (p.pending(), s.pending()) == (1, 2) and p.calls["schedule"] == 2
    store.test_clock.t += 31
    _sched(store, "d", 1.0)
    assert (p.pending(), s.pending()) == (2, 2)


def test_schedule_with_both_sides_down_names_both(store):
    store.primary.down = store.secondary.down = True
    with pytest.raises(ServiceUnavailable) as err:
        _sched(store, "a", 1.0)
    assert store.primary.name in str(err.value) and store.secondary.name in str(err.value)
    assert "retry" in str(err.value)


# ---------------------------------------------------------------- due


def test_due_asks_both_sides_and_each_handle_names_its_side(store):
    _sched(store, "on-primary", 1.0)
    store.primary.down = True
    _sched(store, "on-secondary", 2.0)
    store.primary.down = False
    store.test_clock.t += 31
    items = store.due(10.0, 10)
    assert [i.data for i in items] == [b"on-primary", b"on-secondary"]  # merged by due time
    assert [i.handle.side for i in items] == ["primary", "secondary"]
    assert all(isinstance(i, DueRetry) and isinstance(i.handle, str) for i in items)
    assert parse_handle(items[0].handle) == ("primary", items[0].handle.raw)
    assert items[0].handle.raw == items[1].handle.raw == "1"  # the same row id, on different sides


def test_due_skips_a_side_that_fails_and_raises_only_when_both_do(store):
    _sched(store, "p", 1.0)
    store.primary.down = True
    _sched(store, "s", 1.0)
    assert [i.data for i in store.due(10.0, 10)] == [b"s"]  # the primary is down: the secondary answers
    store.primary.down = False
    store.secondary.down = True
    store.test_clock.t += 31
    assert [i.data for i in store.due(10.0, 10)] == [b"p"]
    store.primary.down = True
    with pytest.raises(ServiceUnavailable) as err:
        store.due(10.0, 10)
    assert store.primary.name in str(err.value) and store.secondary.name in str(err.value)


def test_due_during_the_cool_down_asks_the_primary_only_when_the_secondary_fails(store):
    from eventlog.failover import FAILOVERS

    _sched(store, "p", 1.0)
    store.primary.down = True
    _sched(store, "s", 1.0)
    store.primary.down = False
    assert store.circuit_open
    asked, before = store.primary.calls["due"], FAILOVERS["RETRY"]
    assert [i.data for i in store.due(10.0, 10)] == [b"s"]  # cool-down: the secondary only
    assert store.primary.calls["due"] == asked
    assert FAILOVERS["RETRY"] - before == 1  # the secondary served instead of the primary
    store.secondary.down = True
    assert [i.data for i in store.due(10.0, 10)] == [b"p"]  # the secondary fails: the primary after all
    store.test_clock.t += 31
    store.secondary.down = False
    again = store.due(1_000.0, 10)  # the claims ran out: both sides asked again after the cool-down
    assert sorted((i.handle.side, i.data) for i in again) == [("primary", b"p"), ("secondary", b"s")]
    assert store.primary.calls["due"] == asked + 2


def test_due_shares_the_limit_and_claims_no_more_than_it_returns(store):
    for i in range(5):
        _sched(store, f"p{i}", float(2 * i))
    store.primary.down = True
    for i in range(5):
        _sched(store, f"s{i}", float(2 * i + 1))
    store.primary.down = False
    store.test_clock.t += 31
    first = store.due(100.0, 4)
    assert len(first) == 4
    assert sorted(i.handle.side for i in first) == ["primary", "primary", "secondary", "secondary"]
    assert [i.due for i in first] == sorted(i.due for i in first)
    rest = store.due(100.0, 100)  # nothing was claimed without being returned
    assert len(rest) == 6
    assert {i.data for i in first} | {i.data for i in rest} == {f"{x}{i}".encode() for x in "ps" for i in range(5)}
    assert store.due(100.0, 100) == []


def test_due_tops_up_from_the_side_that_has_more(store):
    for i in range(6):
        _sched(store, f"p{i}", 1.0)
    store.primary.down = True
    _sched(store, "s0", 1.0)
    store.primary.down = False
    store.test_clock.t += 31
    got = store.due(10.0, 4)
    assert len(got) == 4 and [i.handle.side for i in got].count("secondary") == 1
    for limit in (1, 1):  # a limit of one alternates the side asked first
        assert len(store.due(10.0, limit)) == 1


# ---------------------------------------------------------------- done


def test_done_deletes_exactly_the_handles_given_each_on_its_own_side(store, sides):
    p, s = sides
    for i in range(3):
        _sched(store, f"p{i}", 1.0)
    store.primary.down = True
    for i in range(3):
        _sched(store, f"s{i}", 1.0)
    store.primary.down = False
    store.test_clock.t += 31
    assert _ids(p) == _ids(s) == {1, 2, 3}  # the same row ids name different retries on each side
    items = {i.data: i.handle for i in store.due(10.0, 10)}
    assert len(items) == 6
    store.done([items[b"p0"], items[b"s1"], items[b"s2"]])
    assert _ids(p) == {2, 3} and _ids(s) == {1}  # before: "1" from the primary also deleted s0 on the secondary
    assert store.pending() == 3


def test_done_while_a_side_is_down_deletes_nothing_on_the_other_and_is_tried_again(store, sides):
    p, s = sides
    _sched(store, "p0", 1.0)
    store.primary.down = True
    _sched(store, "s0", 1.0)
    store.primary.down = False
    store.test_clock.t += 31
    items = {i.data: i.handle for i in store.due(10.0, 10)}
    store.primary.down = True
    store.done([items[b"p0"]])  # the primary cannot delete: nothing is deleted on the secondary instead
    assert _ids(p) == {1} and _ids(s) == {1}
    assert store.pending_done == 1
    store.primary.down = False
    store.test_clock.t += 31
    assert [i.data for i in store.due(1_000.0, 10)] == [b"s0"]  # p0's claim ran out, but it is not handed out
    assert _ids(p) == set() and store.pending_done == 0  # the delete was tried again and went through


def test_done_ignores_handles_that_name_no_side(store, sides, caplog):
    p, _ = sides
    _sched(store, "p0", 1.0)
    store.done(["1", "elsewhere:1", ""])
    assert _ids(p) == {1}
    assert "names no side" in caplog.text


def test_retry_handle_round_trips_as_text():
    h = RetryHandle.of("secondary", "cid:abc:def")
    assert h == "secondary:cid:abc:def" and (h.side, h.raw) == ("secondary", "cid:abc:def")
    assert parse_handle(str(h)) == ("secondary", "cid:abc:def")
    with pytest.raises(ValueError):
        RetryHandle.of("tertiary", "1")


def test_failover_retries_pickle(store):
    import pickle

    copy = pickle.loads(pickle.dumps(FailoverRetries(store.primary.backend, store.secondary.backend)))
    assert copy.name == store.name
    copy.close()


# ---------------------------------------------------------------- a flapping primary loses nothing, runs nothing twice


class _Flapping:
    """A side whose calls fail by a drawn schedule (one bool per call, cycled)."""

    def __init__(self, backend, pattern: list[bool]):
        self.backend = backend
        self.name = backend.name
        self.pattern = pattern or [False]
        self.n = 0

    def _check(self):
        down = self.pattern[self.n % len(self.pattern)]
        self.n += 1
        if down:
            raise ServiceUnavailable(f"{self.name} flaps")

    def schedule(self, retries):
        self._check()
        self.backend.schedule(retries)

    def due(self, now, limit):
        self._check()
        return self.backend.due(now, limit)

    def done(self, handles):
        self._check()
        self.backend.done(handles)


@given(
    primary=st.lists(st.booleans(), min_size=1, max_size=12),
    secondary=st.lists(st.sampled_from([False, False, False, True]), min_size=1, max_size=12),
    rounds=st.lists(st.tuples(st.integers(0, 4), st.floats(0, 90), st.integers(1, 5)), min_size=1, max_size=25),
)
def test_flapping_sides_lose_no_retry_and_hand_none_out_twice(primary, secondary, rounds):
    with tempfile.TemporaryDirectory() as tmp:
        p = SqliteRetries(f"sqlite:///{Path(tmp) / 'p.db'}")
        s = SqliteRetries(f"sqlite:///{Path(tmp) / 's.db'}")
        clock = Clock(0.0)
        store = FailoverRetries(_Flapping(p, primary), _Flapping(s, secondary), cooldown_s=5.0, clock=clock)
        stored: set[bytes] = set()
        handed: Counter = Counter()
        n = 0
        try:
            for new, step, limit in rounds:
                clock.t += step
                batch = []
                for _ in range(new):
                    n += 1
                    batch.append(ScheduledRetry(f"cid-{n}", f"r{n}".encode(), clock.t + (n % 7) * 10))
                try:
                    store.schedule(batch)
                    stored.update(r.data for r in batch)
                except ServiceUnavailable:
                    pass  # both down: the engine fails the batch item and it is delivered again
                try:
                    items = store.due(clock.t, limit)
                except ServiceUnavailable:
                    continue
                assert len(items) <= limit
                for item in items:
                    handed[item.data] += 1
                store.done([i.handle for i in items])
            store.primary.pattern = store.secondary.pattern = [False]  # both answer again
            clock.t += 10_000
            for _ in range(100):
                items = store.due(clock.t, 7)
                if not items:
                    break
                for item in items:
                    handed[item.data] += 1
                store.done([i.handle for i in items])
            assert set(handed) == stored  # none lost
            assert [d for d, c in handed.items() if c > 1] == []  # none handed out twice
            assert p.pending() == s.pending() == 0 and store.pending_done == 0
        finally:
            p.close()
            s.close()


@pytest.mark.parametrize("pattern", [
    [True, False, False, True, True, False],
    [True, False, True],
    [False, True, True, False, True],
])
def test_engine_over_flapping_retry_sides_runs_every_retry_once(rig_factory, tmp_path, pattern):
    """Machines started in waves fail once each while the primary retry source flaps (so retries wait
    on both sides, under the same row ids): every machine ends, every action ran exactly twice
    (the failure, then the retry)."""
    rig = rig_factory([flaky_machine()], SECONDARY_RETRY_SOURCE=f"sqlite:///{tmp_path}/secondary.db")
    store = rig.services.retries
    store.primary = _Flapping(store.primary, pattern)
    store.cooldown_s = 0.0
    cids = []
    for _ in range(4):  # each wave schedules its retries in one call, on whichever side answers
        cids += [rig.engine.start("flaky") for _ in range(4)]
        rig.engine.handle(rig.next_batch())
    for _ in range(200):
        batch = rig.next_batch()
        if batch:
            rig.engine.handle(batch)
            continue
        if not store.primary.backend.pending() and not store.secondary.pending():
            break
        rig.clock.t += 3600
        rig.engine.run_due_retries(limit=5)
    assert all(CALLS[c] == 2 for c in cids), CALLS
    assert all(rig.full_fold(c).status == COMPLETED for c in cids)
    assert store.primary.backend.pending() == store.secondary.pending() == 0
    assert store.failovers > 0


def test_backend_error_not_unavailable_also_fails_over(store):
    class Broken(Switch):
        def schedule(self, retries):
            raise BackendError("throttled after retries")

    store.primary = Broken(store.primary.backend)
    _sched(store, "x", 1.0)
    assert store.secondary.pending() == 1
