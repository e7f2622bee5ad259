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
