"""Contract of the step gate (``handlers.gate.Gate``) over every cache backend.

Each test runs twice per backend: on the cache as it is (its batch store
``handlers.cache.steps.StepCache`` when it offers one; Memcached offers none)
and on ``BasicOnly``, which hides it so the gate composes each call from
``acquire``/``release``/``extend``/``mark``/``marked``. Both paths must keep the
same contract.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest

from handlers.cache.steps import StepCache
from handlers.gate import Admission, Gate, lease_key

HOLD = 30.0  # a lease that does not run out during a test
DEDUPE = 300.0
FAST_BACKENDS = {"sqlite_cache", "redis_cache", "dynamodb_cache"}  # caches that must offer the fast path


class BasicOnly:
    """A cache with only the basic ``Cache`` calls, so the gate takes its composed path."""

    def __init__(self, cache) -> None:
        self._cache = cache
        self.name = cache.name

    def acquire(self, key: str, owner: str, ttl_s: float, floor: int = 0) -> int | None:
        return self._cache.acquire(key, owner, ttl_s, floor)

    def release(self, key: str, owner: str, token: int) -> None:
        self._cache.release(key, owner, token)

    def extend(self, key: str, owner: str, token: int, ttl_s: float) -> bool:
        return self._cache.extend(key, owner, token, ttl_s)

    def mark(self, key: str, ttl_s: float) -> bool:
        return self._cache.mark(key, ttl_s)

    def marked(self, key: str) -> bool:
        return self._cache.marked(key)


@pytest.fixture(params=["as_is", "composed"])
def store(request, cache):
    """The cache under test, as it is or with its fast path hidden."""
    return cache if request.param == "as_is" else BasicOnly(cache)


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
    assert not isinstance(BasicOnly(cache), StepCache)


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


def test_redis_step_costs_two_round_trips(redis_cache, monkeypatch):
    client = redis_cache._client
    sent: list[str] = []
    send = client.execute_command

    def counted(*args, **kwargs):
        sent.append(str(args[0]))
        return send(*args, **kwargs)

    gate = _gate(redis_cache, "a")
    warm = _cid()
    _run(gate, warm, 1)  # the first use of a script may load it (NOSCRIPT); not counted
    monkeypatch.setattr(client, "execute_command", counted)
    cid = _cid()
    adm = gate.begin(cid, 1)
    gate.end(cid, 1, adm.token, True)
    assert sent == ["EVALSHA", "EVALSHA"]
    assert gate.begin(cid, 1).done is True
