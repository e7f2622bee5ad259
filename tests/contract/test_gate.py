"""Contract of the step gate (``handlers.gate.Gate``) over every cache backend.

Each test runs twice per backend: on the cache as it is (its batch store
``handlers.cache.steps.StepCache`` when it offers one; Memcached offers none)
and on ``tests.plain_cache.PlainCache``, which hides it so the gate composes each call from
``acquire``/``release``/``extend``/``mark``/``marked``. Both paths must keep the
same contract.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest

from handlers.cache.steps import (
    DONE,
    TRIED,
    Ending,
    StepCache,
    StepKey,
    as_steps,
    completed_ordinal,
    token_floor,
)
from handlers.gate import Admission, Gate, lease_key
from tests.plain_cache import PlainCache

HOLD = 30.0  # a lease that does not run out during a test
DEDUPE = 300.0
FAST_BACKENDS = {"sqlite_cache", "redis_cache", "dynamodb_cache"}  # caches that must offer the fast path


@pytest.fixture(params=["as_is", "composed"])
def store(request, cache):
    """The cache under test, as it is or with its fast path hidden."""
    return cache if request.param == "as_is" else PlainCache(cache)


@pytest.fixture
def empty_twin(request, store, tmp_path):
    """A second store of the same kind that has never seen anything (a new file, key prefix or table),
    as the store under test is: a cache that lost everything, or the other side of a failover pair."""
    backend = request.node.callspec.params["cache"]
    if backend == "sqlite_cache":
        from handlers.cache.sqlite import SqliteCache

        twin = SqliteCache(f"sqlite:///{tmp_path / 'twin' / 'fsmlog.db'}")
    elif backend == "redis_cache":
        from handlers.cache.redis import RedisCache

        twin = RedisCache(request.getfixturevalue("redis_url"), prefix=f"t{uuid.uuid4().hex[:12]}:")
    elif backend == "memcached_cache":
        from handlers.cache.memcached import MemcachedCache

        twin = MemcachedCache(request.getfixturevalue("memcached_url"), prefix=f"t{uuid.uuid4().hex[:12]}:")
    elif backend == "dynamodb_cache":
        from handlers.cache.dynamodb import DynamoDBCache
        from tests.contract.cache_factories import cache_table_arn
        from tests.fixtures.servers import settings_for

        arn = cache_table_arn()
        twin = DynamoDBCache.create(arn, settings_for(request.getfixturevalue("moto_server"), [arn]))
    else:
        raise AssertionError(f"no empty twin for {backend}")
    yield PlainCache(twin) if isinstance(store, PlainCache) else twin
    close = getattr(twin, "close", None)
    if close is not None:
        close()


def _forget(store, cid: str) -> None:
    """Everything the store keeps of machine ``cid`` is gone (evicted, flushed, restarted): its lease,
    fence counter, mark, flags."""
    cache = store.wrapped if isinstance(store, PlainCache) else store
    kind = type(cache).__name__
    if kind == "SqliteCache":
        with cache.db.transaction() as conn:
            conn.execute("DELETE FROM progress WHERE cid = ?", (cid,))
            for table in ("leases", "fence"):
                conn.execute(f"DELETE FROM {table} WHERE key = ?", (lease_key(cid),))
            conn.execute("DELETE FROM flags WHERE key LIKE ? OR key LIKE ? OR key = ?",
                         (f"done:{cid}:%", f"tried:{cid}:%", f"abort:{cid}"))
    elif kind == "RedisCache":
        keys = list(cache._client.scan_iter(match=f"{cache.prefix}*{cid}*"))
        assert keys, "nothing to forget"
        cache._client.delete(*keys)
    elif kind == "MemcachedCache":
        from handlers.cache.memcached import _safe

        names = [f"lease:{lease_key(cid)}", f"fence:{lease_key(cid)}", f"flag:abort:{cid}"]
        for steps in range(8):
            names.append(f"flag:done:{cid}:{steps}")
            names += [f"flag:tried:{cid}:{steps}:{retries}" for retries in range(4)]
        for name in names:
            cache._client.delete(_safe(cache.prefix, name))
    elif kind == "DynamoDBCache":
        items = cache._boto.scan(TableName=cache.table)["Items"]
        gone = [i["key"] for i in items if cid in i["key"]["S"]]
        assert gone, "nothing to forget"
        for key in gone:
            cache._boto.delete_item(TableName=cache.table, Key={"key": key})
    else:
        raise AssertionError(f"cannot make {kind} forget")


def _cid() -> str:
    return f"m-{uuid.uuid4().hex}"


def _gate(store, owner: str, lease_s: float = HOLD) -> Gate:
    return Gate(store, owner, lease_s, DEDUPE)


def _run(gate: Gate, cid: str, steps: int) -> int:
    """One step as the engine runs it: admitted, not done, then ended as done."""
    adm = gate.begin(cid, steps)
    assert adm.token is not None and not adm.done and not adm.aborted
    gate.end(cid, steps, adm.token, True)
    return adm.token


def test_the_batch_store_is_offered_by_the_fast_backends(request, cache):
    backend = request.node.callspec.params["cache"]
    assert isinstance(cache, StepCache) == (backend in FAST_BACKENDS)
    assert not isinstance(PlainCache(cache), StepCache)


def test_begin_admits_a_fresh_step_with_a_token(store):
    adm = _gate(store, "a").begin(_cid(), 1)
    assert isinstance(adm.token, int)
    assert (adm.done, adm.aborted) == (False, False)


def test_second_owner_is_refused_while_the_lease_is_held(store):
    cid = _cid()
    a, b = _gate(store, "a"), _gate(store, "b")
    held = a.begin(cid, 1)
    assert held.token is not None
    assert b.begin(cid, 1) == Admission(None, False, False)
    a.end(cid, 1, held.token, False)
    taken = b.begin(cid, 1)
    assert taken.token is not None and taken.token > held.token
    assert taken.done is False


def test_machines_are_independent(store):
    a, b = _gate(store, "a"), _gate(store, "b")
    assert a.begin(_cid(), 1).token is not None
    assert b.begin(_cid(), 1).token is not None


def test_a_step_ended_done_is_reported_done(store):
    cid = _cid()
    gate = _gate(store, "a")
    _run(gate, cid, 4)
    again = gate.begin(cid, 4)
    assert again.token is not None
    assert again.done is True and again.aborted is False


def test_steps_done_in_order_cover_lower_steps_but_not_higher_ones(store):
    cid = _cid()
    gate = _gate(store, "a")
    for steps in range(4):  # steps 0..3, each run to completion, as a machine advances
        _run(gate, cid, steps)
    for steps in (3, 1, 0):
        adm = gate.begin(cid, steps)
        assert adm.token is not None and adm.done is True
        gate.release(cid, adm.token)
    ahead = gate.begin(cid, 4)
    assert ahead.token is not None and ahead.done is False
    assert _gate(store, "b").begin(cid, 4).token is None  # a holds step 4's lease


def test_an_attempt_that_scheduled_its_retry_is_not_run_again_but_the_retry_is(store):
    """A failed attempt whose retry was scheduled is handled: a redelivered copy of it is skipped,
    the retry (retries + 1) runs, and once the step completes no attempt of it runs again."""
    cid = _cid()
    gate = _gate(store, "a")
    first = gate.begin(cid, 2, retries=0)
    gate.end(cid, 2, first.token, False, retries=0, tried=True)
    copy = gate.begin(cid, 2, retries=0)
    assert copy.done is True
    gate.release(cid, copy.token)
    retry = gate.begin(cid, 2, retries=1)
    assert retry.done is False
    gate.end(cid, 2, retry.token, True, retries=1)  # the retry succeeded: step 2 completed
    for retries in (0, 1, 2, 7):  # copies, and a redispatch with retries + 1, are all history now
        again = gate.begin(cid, 2, retries=retries)
        assert again.done is True
        gate.release(cid, again.token)
    assert gate.begin(cid, 3).done is False


def test_a_step_ended_not_done_stays_to_be_run(store):
    cid = _cid()
    gate = _gate(store, "a")
    adm = gate.begin(cid, 2)
    gate.end(cid, 2, adm.token, False)  # failed: a retry of the same step must run
    retry = gate.begin(cid, 2)
    assert retry.token is not None and retry.done is False
    gate.release(cid, retry.token)
    assert _gate(store, "b").begin(cid, 2).done is False


def test_abort_stops_that_machine_only(store):
    cid, other = _cid(), _cid()
    gate = _gate(store, "a")
    _run(gate, cid, 1)
    _gate(store, "operator").abort(cid)
    stopped = gate.begin(cid, 2)
    assert stopped.token is not None and stopped.aborted is True and stopped.done is False
    gate.release(cid, stopped.token)
    assert _gate(store, "b").begin(cid, 2).aborted is True
    elsewhere = gate.begin(other, 2)
    assert elsewhere.token is not None and (elsewhere.done, elsewhere.aborted) == (False, False)


def test_abort_while_leased_shows_once_the_lease_is_taken(store):
    cid = _cid()
    a, b = _gate(store, "a"), _gate(store, "b")
    held = a.begin(cid, 1)
    a.abort(cid)
    assert b.begin(cid, 1).token is None  # the lease still comes first
    a.end(cid, 1, held.token, False)
    assert b.begin(cid, 1).aborted is True


def test_fence_tokens_strictly_increase_across_cycles_owners_and_expiry(store, expiry):
    ttl, wait = expiry
    cid = _cid()
    tokens = []
    for owner in ("a", "b", "a", "c"):
        adm = _gate(store, owner).begin(cid, len(tokens))
        assert adm.token is not None
        tokens.append(adm.token)
        _gate(store, owner).end(cid, len(tokens) - 1, adm.token, True)
    reentrant = _gate(store, "d")
    tokens.append(reentrant.begin(cid, 4).token)
    tokens.append(reentrant.begin(cid, 4).token)  # the holder again: a new, larger token
    tokens.append(_gate(store, "e", ttl).begin(cid, 4).token)  # refused: d holds it
    assert tokens[-1] is None
    tokens.pop()
    reentrant.release(cid, tokens[-1])
    tokens.append(_gate(store, "e", ttl).begin(cid, 4).token)
    time.sleep(wait)  # e dies holding the lease
    tokens.append(_gate(store, "f").begin(cid, 4).token)
    assert all(t is not None for t in tokens)
    assert all(later > earlier for earlier, later in zip(tokens, tokens[1:]))


def test_a_superseded_token_of_the_same_owner_releases_nothing(store):
    cid = _cid()
    gate = _gate(store, "a")
    first = gate.begin(cid, 1).token
    second = gate.begin(cid, 1).token
    assert second is not None and first is not None and second > first
    gate.end(cid, 1, first, False)
    assert _gate(store, "b").begin(cid, 1).token is None
    gate.end(cid, 1, second, False)
    assert _gate(store, "b").begin(cid, 1).token is not None


def test_a_stale_holders_end_keeps_the_new_holders_lease_but_counts_its_step(store, expiry):
    ttl, wait = expiry
    cid = _cid()
    stale_gate, new_gate = _gate(store, "a", ttl), _gate(store, "b")
    stale = stale_gate.begin(cid, 1)
    assert stale.token is not None
    time.sleep(wait)  # a stalls past its lease
    fresh = new_gate.begin(cid, 1)
    assert fresh.token is not None and fresh.token > stale.token and fresh.done is False
    stale_gate.end(cid, 1, stale.token, True)  # a comes back, having appended step 1's next record
    assert _gate(store, "c").begin(cid, 1).token is None  # b still holds the lease
    new_gate.end(cid, 1, fresh.token, False)
    after = _gate(store, "c").begin(cid, 1)
    assert after.token is not None and after.token > fresh.token
    assert after.done is True  # a's step was recorded all the same


def test_gate_and_basic_acquire_share_one_fence_counter(request, cache):
    """Mixing the paths on one machine never hands out a smaller token."""
    cid = _cid()
    gate = _gate(cache, "a")
    first = cache.acquire(lease_key(cid), "a", HOLD)
    cache.release(lease_key(cid), "a", first)
    adm = gate.begin(cid, 1)
    assert adm.token is not None and adm.token > first
    assert cache.acquire(lease_key(cid), "b", HOLD) is None  # the gate's lease is the same lease
    gate.end(cid, 1, adm.token, True)
    last = cache.acquire(lease_key(cid), "b", HOLD)
    assert last is not None and last > adm.token


# ---------------------------------------------------------------- token floors, forgetting, renewal, peeking


def test_a_token_is_at_least_the_records_floor(store):
    cid = _cid()
    gate = _gate(store, "a")
    for steps, retries, elapsed_ms in ((0, 0, 0), (1, 0, 0), (1, 2, 0), (3, 1, 5000), (9, 0, 1)):
        adm = gate.begin(cid, steps, retries, elapsed_ms=elapsed_ms)
        assert adm.token is not None and adm.token >= token_floor(steps, retries, elapsed_ms)
        assert adm.token >= StepKey(cid, steps, retries, elapsed_ms).floor
        gate.end(cid, steps, adm.token, True, retries=retries)
    again = gate.begin(cid, 2)  # an old copy: the counter is above its floor, and still grows
    assert again.token is not None and again.token > adm.token


def test_a_fresh_store_issues_a_later_attempt_a_token_above_every_earlier_one(store, empty_twin):
    cid = _cid()
    gate = _gate(store, "a")
    issued = []
    for steps in range(4):
        for retries in (0, 1):
            for _ in range(3):  # re-entrant acquisitions push the counter above the floor
                adm = gate.begin(cid, steps, retries)
                assert adm.token is not None
                issued.append(adm.token)
            gate.end(cid, steps, adm.token, retries == 1, retries=retries, tried=retries == 0)
    twin = _gate(empty_twin, "b")
    for steps, retries in ((3, 2), (4, 0), (7, 0)):
        later = twin.begin(cid, steps, retries)
        assert later.token is not None and later.token > max(issued), (steps, retries)
        twin.release(cid, later.token)
    # the same attempt run again later: its floor has risen with the time since its record was written
    run = gate.begin(cid, 5, 0, elapsed_ms=0)
    rerun = _gate(empty_twin, "c").begin(cid, 5, 0, elapsed_ms=1)
    assert run.token is not None and rerun.token is not None and rerun.token > run.token


def test_a_store_that_forgot_the_machine_knows_nothing_of_it(store):
    cid = _cid()
    gate = _gate(store, "a")
    tokens = [_run(gate, cid, steps) for steps in range(3)]
    knowing = gate.begin(cid, 3)
    assert knowing.known and not knowing.done
    gate.release(cid, knowing.token)
    _forget(store, cid)
    assert as_steps(store).begin_steps([StepKey(cid, 3, 0)], "probe", HOLD)[0].mark is None
    _forget(store, cid)
    for steps in (3, 2, 0):  # the next step, a step it had completed, the start: it cannot tell
        adm = gate.begin(cid, steps)
        assert adm.token is not None and adm.token > max(tokens)  # the floor, though the counter is gone
        assert (adm.known, adm.done) == (False, False)
        gate.release(cid, adm.token)
        tokens.append(adm.token)
    asked = []

    def authority(cids):
        asked.extend(cids)
        return dict.fromkeys(cids)

    verified = Gate(store, "a", HOLD, DEDUPE, authority=authority).begin(cid, 3)
    assert asked == [cid] and verified.known


def test_a_registered_machine_is_known_with_nothing_handled(store):
    cid, stranger = _cid(), _cid()
    gate = _gate(store, "a")
    gate.register([cid])
    start = gate.begin(cid, 0)
    assert start.token is not None and (start.known, start.done) == (True, False)
    gate.end(cid, 0, start.token, True)
    assert gate.begin(cid, 0).done
    unknown = gate.begin(stranger, 0)  # never registered: a store cannot tell it from one it forgot
    assert (unknown.known, unknown.done) == (False, False)


def test_renewal_keeps_a_lease_refuses_a_lost_one_and_revives_one_nobody_took(store, expiry):
    ttl, wait = expiry
    kept, lost, lapsed = _cid(), _cid(), _cid()
    steps = as_steps(store)
    views = steps.begin_steps([StepKey(kept, 1, 0), StepKey(lost, 1, 0), StepKey(lapsed, 1, 0)], "a", ttl)
    tokens = [v.token for v in views]
    assert all(t is not None for t in tokens)
    assert steps.renew_leases([(kept, tokens[0])], "a", HOLD) == [True]
    time.sleep(wait)  # lost's and lapsed's leases run out; kept's was renewed
    assert _gate(store, "b").begin(kept, 1).token is None
    taken = _gate(store, "b").begin(lost, 1)
    assert taken.token is not None and taken.token > tokens[1]
    renewed = steps.renew_leases(list(zip((kept, lost, lapsed), tokens)), "a", HOLD)
    assert renewed == [True, False, True]  # lapsed: ran out, but nobody acquired it since
    assert _gate(store, "b").begin(lapsed, 1).token is None  # held again
    assert _gate(store, "c").begin(lost, 1).token is None  # b keeps what it took
    assert steps.renew_leases([(lost, taken.token)], "b", HOLD) == [True]


def test_the_lease_check_says_whether_anyone_acquired_since_and_changes_nothing(store, expiry):
    """What a holder asks just before it appends: a read, not a renewal (no write unit per lease)."""
    ttl, wait = expiry
    kept, lost, lapsed = _cid(), _cid(), _cid()
    steps = as_steps(store)
    views = steps.begin_steps([StepKey(kept, 1, 0), StepKey(lost, 1, 0), StepKey(lapsed, 1, 0)], "a", ttl)
    pairs = list(zip((kept, lost, lapsed), (v.token for v in views)))
    assert steps.check_leases(pairs, "a", ttl) == [True, True, True]
    time.sleep(wait)  # every lease runs out
    taken = _gate(store, "b").begin(lost, 1)
    assert taken.token is not None
    assert steps.check_leases(pairs, "a", ttl) == [True, False, True]  # lapsed: nobody acquired it since
    assert steps.check_leases([(lost, taken.token)], "b", HOLD) == [True]
    assert steps.check_leases([], "a", HOLD) == []


def test_end_marks_even_for_a_stale_holder_and_releases_only_the_current_one(store):
    steps = as_steps(store)
    cid = _cid()
    stale = steps.begin_steps([StepKey(cid, 1, 0)], "a", HOLD)[0].token
    current = steps.begin_steps([StepKey(cid, 1, 0)], "a", HOLD)[0].token
    assert current > stale
    steps.end_steps([Ending(cid, 1, 0, stale, DONE)], "a", DEDUPE)
    assert _gate(store, "b").begin(cid, 1).token is None  # the current token still holds the lease
    steps.end_steps([Ending(cid, 2, 0, None, DONE)], "a", DEDUPE)  # a mark only: no lease given back
    assert _gate(store, "b").begin(cid, 1).token is None
    steps.end_steps([Ending(cid, 1, 0, current, None)], "a", DEDUPE)
    after = _gate(store, "b").begin(cid, 2)
    assert after.token is not None and after.done  # both marks counted
    assert _gate(store, "b").begin(cid, 3).known


def test_one_end_call_marks_and_releases_a_whole_batch(store):
    steps = as_steps(store)
    done, tried, nothing, local_done, local_tried = (_cid() for _ in range(5))
    keys = [StepKey(done, 1, 0), StepKey(tried, 2, 0), StepKey(nothing, 0, 0), StepKey(local_done, 1, 0),
            StepKey(local_tried, 1, 0)]
    tokens = [v.token for v in steps.begin_steps(keys, "a", HOLD)]
    assert all(t is not None for t in tokens)
    steps.end_steps([
        Ending(done, 1, 0, tokens[0], DONE),
        Ending(tried, 2, 0, tokens[1], TRIED),
        Ending(nothing, 0, 0, tokens[2], None),
        Ending(local_done, 1, 0, tokens[3], DONE, last=3),  # steps 1..3 ran in one invocation
        Ending(local_tried, 1, 0, tokens[4], TRIED, last=3, last_retries=1),  # ... and step 3 failed
    ], "a", DEDUPE)
    b = _gate(store, "b")
    for cid, steps_, retries, done_, known in (
            (done, 1, 0, True, True), (done, 2, 0, False, True),
            (tried, 2, 0, True, True), (tried, 2, 1, False, True),
            (nothing, 0, 0, False, False),
            (local_done, 3, 0, True, True), (local_done, 4, 0, False, True),
            (local_tried, 1, 0, True, True), (local_tried, 3, 1, True, True), (local_tried, 3, 2, False, True)):
        adm = b.begin(cid, steps_, retries)
        assert adm.token is not None, (cid, steps_, retries)  # every lease was given back
        assert (adm.done, adm.known) == (done_, known), (cid, steps_, retries)
        b.release(cid, adm.token)


def test_peek_reads_marks_and_aborts_and_takes_no_lease(store):
    steps = as_steps(store)
    ran, aborted, unknown = _cid(), _cid(), _cid()
    gate = _gate(store, "a")
    _run(gate, ran, 1)
    held = gate.begin(ran, 2)
    gate.abort(aborted)
    views = steps.peek_steps([StepKey(ran, 1, 0), StepKey(aborted, 0, 0), StepKey(unknown, 0, 0)])
    assert [v.token for v in views] == [None, None, None]
    assert [v.aborted for v in views] == [False, True, False]
    # a high-water store tells the machine's mark; a plain cache's flags tell the record's (its step done)
    assert [v.mark for v in views] == [completed_ordinal(1), None, None]
    assert _gate(store, "b").begin(ran, 2).token is None  # a's lease is untouched
    assert gate.renew([(ran, held.token)]) == [True]
    for cid in (aborted, unknown):  # and the peek took none
        assert _gate(store, "b").begin(cid, 0).token is not None


# ---------------------------------------------------------------- the high-water mark of DynamoDB and Redis

HIGH_WATER = [pytest.param(name, id=name.split("_")[0], marks=pytest.mark.integration)
              for name in ("redis_cache", "dynamodb_cache")]


@pytest.mark.parametrize("backend", HIGH_WATER)
def test_the_done_mark_covers_every_lower_step_and_never_goes_down(request, backend):
    cache = request.getfixturevalue(backend)
    cid = _cid()
    gate = _gate(cache, "a")
    _run(gate, cid, 5)
    late = gate.begin(cid, 3)  # a redelivered older record: steps only grow, so it is a duplicate
    assert late.done is True
    gate.end(cid, 3, late.token, True)  # ending it done again must not lower the mark
    for steps, done in ((5, True), (4, True), (6, False)):
        adm = gate.begin(cid, steps)
        assert (adm.token is not None, adm.done) == (True, done)
        gate.release(cid, adm.token)


@pytest.mark.parametrize("backend", HIGH_WATER)
def test_a_stale_holder_may_raise_the_mark_but_not_lower_it(request, backend):
    cache = request.getfixturevalue(backend)
    cid = _cid()
    a, b = _gate(cache, "a"), _gate(cache, "b")
    old = a.begin(cid, 2).token
    a.release(cid, old)
    _run(b, cid, 7)
    held = b.begin(cid, 8)
    a.end(cid, 2, old, True)  # stale and lower: neither the lease nor the mark moves
    assert _gate(cache, "c").begin(cid, 8).token is None
    a.end(cid, 9, old, True)  # stale but higher: its step's record was appended, so it counts
    b.end(cid, 8, held.token, False)
    assert _gate(cache, "c").begin(cid, 9).done is True


# ---------------------------------------------------------------- round trips

def test_dynamodb_step_costs_two_calls(dynamodb_cache):
    from eventlog.aws import API_CALLS

    cid = _cid()
    gate = _gate(dynamodb_cache, "a")
    before = Counter(API_CALLS)
    adm = gate.begin(cid, 1)
    gate.end(cid, 1, adm.token, True)
    spent = Counter(API_CALLS)
    spent.subtract(before)
    assert +spent == Counter({("dynamodb", "UpdateItem"): 2})
    before = Counter(API_CALLS)
    gate.abort(cid)
    spent = Counter(API_CALLS)
    spent.subtract(before)
    assert +spent == Counter({("dynamodb", "UpdateItem"): 1})


def test_dynamodb_batch_costs_one_call_per_record(dynamodb_cache):
    from eventlog.aws import API_CALLS

    gate = _gate(dynamodb_cache, "a")
    cids = [_cid() for _ in range(20)]
    before = Counter(API_CALLS)
    admissions = gate.begin_many([(cid, 1, 0) for cid in cids])
    gate.end_many([Ending(cid, 1, 0, adm.token, DONE) for cid, adm in zip(cids, admissions)])
    spent = Counter(API_CALLS)
    spent.subtract(before)
    assert +spent == Counter({("dynamodb", "UpdateItem"): 40})


class RoundTrips:
    """Counts what the redis client sends: each write of commands to the socket (a round trip: the
    client reads the replies before it sends again) and each pipeline executed."""

    def __init__(self, cache, monkeypatch) -> None:
        import redis

        self.writes: list[str] = []
        self.pipelines = 0
        connection = cache._client.connection_pool.connection_class
        send, execute = connection.send_packed_command, redis.client.Pipeline.execute

        def sent(conn, command, *args, **kwargs):
            raw = command if isinstance(command, (bytes, bytearray)) else b"".join(bytes(c) for c in command)
            words = [w for w in raw.split(b"\r\n") if w and w[:1] not in (b"*", b"$")]
            self.writes.append(" ".join(w.decode(errors="replace") for w in words[:2]))
            return send(conn, command, *args, **kwargs)

        def executed(pipe, *args, **kwargs):
            self.pipelines += 1
            return execute(pipe, *args, **kwargs)

        monkeypatch.setattr(connection, "send_packed_command", sent)
        monkeypatch.setattr(redis.client.Pipeline, "execute", executed)

    def take(self) -> tuple[int, int, list[str]]:
        out = (len(self.writes), self.pipelines, self.writes)
        self.writes, self.pipelines = [], 0
        return out


def _warm(cache) -> None:
    """The first use of the connection handshakes, and of each script may load it: not counted."""
    gate = _gate(cache, "a")
    cid = _cid()
    _run(gate, cid, 1)
    held = gate.begin(cid, 2)
    gate.renew([(cid, held.token)])
    gate.release(cid, held.token)


@pytest.mark.parametrize("n", [1, 20])
def test_redis_batch_is_one_pipeline_to_begin_and_one_to_end(redis_cache, monkeypatch, n):
    _warm(redis_cache)
    trips = RoundTrips(redis_cache, monkeypatch)
    steps = as_steps(redis_cache)
    cids = [_cid() for _ in range(n)]
    views = steps.begin_steps([StepKey(cid, 1, 0) for cid in cids], "a", HOLD)
    begin = trips.take()
    steps.end_steps([Ending(cid, 1, 0, v.token, DONE) for cid, v in zip(cids, views)], "a", DEDUPE)
    end = trips.take()
    assert (begin[1], end[1]) == (1, 1)
    sizes = {}
    for k in (1, 20):  # whatever a batch costs, it does not grow with the batch
        more = [_cid() for _ in range(k)]
        steps.end_steps([Ending(c, 1, 0, v.token, DONE) for c, v in
                         zip(more, steps.begin_steps([StepKey(c, 1, 0) for c in more], "a", HOLD))], "a", DEDUPE)
        sizes[k] = trips.take()[0]
    assert sizes[1] == sizes[20]
    assert all(v.token is not None for v in views)
    assert all(v.mark == completed_ordinal(1) for v in steps.peek_steps([StepKey(c, 1, 0) for c in cids]))


@pytest.mark.parametrize("n", [1, 20])
def test_redis_batch_costs_one_round_trip_to_begin_and_one_to_end(redis_cache, monkeypatch, n):
    _warm(redis_cache)
    trips = RoundTrips(redis_cache, monkeypatch)
    steps = as_steps(redis_cache)
    cids = [_cid() for _ in range(n)]
    views = steps.begin_steps([StepKey(cid, 1, 0) for cid in cids], "a", HOLD)
    begin = trips.take()
    steps.end_steps([Ending(cid, 1, 0, v.token, DONE) for cid, v in zip(cids, views)], "a", DEDUPE)
    end = trips.take()
    assert (begin[0], end[0]) == (1, 1), f"begin sent {begin[2]}, end sent {end[2]}"
    assert len(steps.renew_leases([(cid, v.token) for cid, v in zip(cids, views)], "a", HOLD)) == n
    assert trips.take()[0] == 1
    steps.peek_steps([StepKey(c, 1, 0) for c in cids])
    assert trips.take()[0] == 1
