"""A cache that can evict leases is refused at start, naming the setting and the fix (issue 9, item 5).

Real ``redis-server`` (its ``maxmemory-policy`` changed with CONFIG SET for the test, read back by
fsmlog with INFO as on ElastiCache) and real ``memcached``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from eventlog.errors import SettingsError
from eventlog.settings import load_settings
from handlers.wiring import open_backend

pytestmark = pytest.mark.integration


@pytest.fixture
def evicting_redis(redis_url: str) -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(redis_url)
    before = client.config_get("maxmemory-policy")["maxmemory-policy"]
    client.config_set("maxmemory-policy", "volatile-lru")  # ElastiCache's default parameter group
    try:
        yield redis_url
    finally:
        client.config_set("maxmemory-policy", before)
        client.close()


def test_a_redis_that_may_evict_leases_is_refused_naming_the_setting_and_the_fix(evicting_redis: str) -> None:
    settings = load_settings(environ={}, PRIMARY_CACHE_SOURCE=evicting_redis)
    with pytest.raises(SettingsError) as info:
        open_backend("CACHE", evicting_redis, settings)
    message = str(info.value)
    assert "PRIMARY_CACHE_SOURCE" in message and "volatile-lru" in message
    assert "noeviction" in message and "CACHE_ALLOW_EVICTION" in message


def test_accepting_eviction_turns_the_refusal_into_a_warning(evicting_redis: str, caplog) -> None:
    settings = load_settings(environ={}, CACHE_ALLOW_EVICTION=True)
    with caplog.at_level(logging.WARNING, logger="fsmlog.wiring"):
        cache = open_backend("CACHE", evicting_redis, settings, "SECONDARY")
    cache.close()
    assert any("SECONDARY_CACHE_SOURCE" in r.getMessage() and "accepted" in r.getMessage() for r in caplog.records)


def test_a_redis_with_noeviction_opens_without_a_word(redis_url: str, caplog) -> None:
    settings = load_settings(environ={})
    with caplog.at_level(logging.WARNING, logger="fsmlog.wiring"):
        cache = open_backend("CACHE", redis_url, settings)
    assert cache.eviction_policy() == "noeviction"
    cache.close()
    assert not caplog.records


def test_memcached_is_accepted_with_a_warning_that_it_evicts(memcached_url: str, caplog) -> None:
    settings = load_settings(environ={})
    with caplog.at_level(logging.WARNING, logger="fsmlog.wiring"):
        open_backend("CACHE", memcached_url, settings).close()
    assert any("PRIMARY_CACHE_SOURCE" in r.getMessage() and "Memcached evicts" in r.getMessage()
               for r in caplog.records)
