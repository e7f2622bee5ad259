"""Contract of Cache: leases with fence tokens, idempotency flags."""

from __future__ import annotations

import time
import uuid

from handlers.cache import Cache

HOLD = 30.0  # a TTL that does not run out during a test


def _key() -> str:
    return f"lease-{uuid.uuid4().hex}"


def test_is_a_cache(cache):
    assert isinstance(cache, Cache)


def test_second_owner_is_refused_while_the_lease_is_held(cache):
    key = _key()
    token = cache.acquire(key, "a", HOLD)
    assert isinstance(token, int)
    assert cache.acquire(key, "b", HOLD) is None


def test_release_lets_another_owner_in_with_a_larger_token(cache):
    key = _key()
    first = cache.acquire(key, "a", HOLD)
    cache.release(key, "a", first)
    second = cache.acquire(key, "b", HOLD)
    assert second is not None and second > first


def test_reentrant_acquire_by_the_holder(cache):
    key = _key()
    first = cache.acquire(key, "a", HOLD)
    again = cache.acquire(key, "a", HOLD)
    assert again is not None and again >= first
    assert cache.acquire(key, "b", HOLD) is None


def test_release_by_a_non_holder_or_with_a_stale_token_is_ignored(cache):
    key = _key()
    token = cache.acquire(key, "a", HOLD)
    cache.release(key, "b", token)
    assert cache.acquire(key, "b", HOLD) is None
    cache.release(key, "a", token + 1000)
    assert cache.acquire(key, "b", HOLD) is None


def test_lease_can_be_taken_over_after_expiry(cache, expiry):
    ttl, wait = expiry
    key = _key()
    stale = cache.acquire(key, "a", ttl)
    time.sleep(wait)
    fresh = cache.acquire(key, "b", HOLD)
    assert fresh is not None and fresh > stale
    cache.release(key, "a", stale)  # the dead holder comes back: ignored
    assert cache.acquire(key, "a", HOLD) is None


def test_fence_tokens_strictly_increase_across_cycles_and_owners(cache, expiry):
    ttl, wait = expiry
    key = _key()
    tokens = []
    for owner in ("a", "b", "a", "c"):
        token = cache.acquire(key, owner, HOLD)
        assert token is not None
        tokens.append(token)
        cache.release(key, owner, token)
    tokens.append(cache.acquire(key, "d", ttl))
    time.sleep(wait)
    tokens.append(cache.acquire(key, "e", HOLD))
    assert all(t is not None for t in tokens)
    assert all(later > earlier for earlier, later in zip(tokens, tokens[1:]))


def test_keys_are_independent(cache):
    k1, k2 = _key(), _key()
    assert cache.acquire(k1, "a", HOLD) is not None
    assert cache.acquire(k2, "b", HOLD) is not None


def test_mark_sets_a_flag_once(cache):
    key = _key()
    assert cache.marked(key) is False
    assert cache.mark(key, HOLD) is True
    assert cache.marked(key) is True
    assert cache.mark(key, HOLD) is False
    assert cache.marked(key) is True
    assert cache.marked(_key()) is False


def test_an_expired_flag_can_be_marked_again(cache, expiry):
    ttl, wait = expiry
    key = _key()
    assert cache.mark(key, ttl) is True
    time.sleep(wait)
    assert cache.marked(key) is False
    assert cache.mark(key, HOLD) is True
    assert cache.marked(key) is True


def test_acquire_issues_at_least_the_floor_and_still_more_than_before(cache):
    key = _key()
    first = cache.acquire(key, "a", HOLD, floor=5000)
    assert first is not None and first >= 5000
    cache.release(key, "a", first)
    below = cache.acquire(key, "b", HOLD, floor=10)  # a floor under the counter: the counter goes on
    assert below is not None and below > first
    cache.release(key, "b", below)
    above = cache.acquire(key, "c", HOLD, floor=below + 10_000)  # a floor above it: the floor
    assert above is not None and above >= below + 10_000
    assert cache.acquire(key, "d", HOLD, floor=10**9) is None  # a floor takes no lease held by another


def test_a_fresh_key_starts_at_its_floor(cache):
    """A store that never saw the key (or lost its counter) still issues at least the floor."""
    assert cache.acquire(_key(), "a", HOLD, floor=123_456) >= 123_456
    assert cache.acquire(_key(), "a", HOLD) >= 1


def test_extend_keeps_a_lease_refuses_a_lost_one_and_revives_one_nobody_took(cache, expiry):
    ttl, wait = expiry
    kept, lost, lapsed = _key(), _key(), _key()
    tokens = [cache.acquire(k, "a", ttl) for k in (kept, lost, lapsed)]
    assert all(t is not None for t in tokens)
    assert cache.extend(kept, "a", tokens[0], HOLD) is True
    time.sleep(wait)
    assert cache.acquire(kept, "b", HOLD) is None  # renewed: still held
    taken = cache.acquire(lost, "b", HOLD)
    assert taken is not None and taken > tokens[1]
    assert cache.extend(lost, "a", tokens[1], HOLD) is False  # another owner acquired it since
    assert cache.extend(lapsed, "a", tokens[2], HOLD) is True  # ran out, but nobody acquired it since
    assert cache.acquire(lapsed, "b", HOLD) is None
    assert cache.acquire(lost, "c", HOLD) is None  # the failed extend left b's lease alone
    assert cache.extend(lost, "b", taken, HOLD) is True


def test_extend_with_a_superseded_token_fails(cache):
    key = _key()
    old = cache.acquire(key, "a", HOLD)
    new = cache.acquire(key, "a", HOLD)  # re-entrant: a new, larger token
    assert new is not None and new > old
    assert cache.extend(key, "a", old, HOLD) is False
    assert cache.extend(key, "a", new, HOLD) is True
