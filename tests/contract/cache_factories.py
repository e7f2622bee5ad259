"""Contract-suite fixtures for the cache and metrics backends that need servers.

``CACHE_FACTORIES`` lists, per interface, ``(backend id, fixture name)``; the
contract suite parametrizes over them. Each fixture gives a fresh, isolated
backend: Redis and Memcached get a unique key prefix on the session's server,
DynamoDB a new table on the moto server. Needs the ``redis_url`` /
``memcached_url`` fixtures (tests.fixtures.cache_servers) and ``moto_server``
(tests.fixtures.servers).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.servers import ACCOUNT, REGION, settings_for

CACHE_FACTORIES: dict[str, list[tuple[str, str]]] = {
    "cache": [("redis", "redis_cache"), ("memcached", "memcached_cache"), ("dynamodb", "dynamodb_cache")],
    "metrics": [("cloudwatch", "cloudwatch_metrics")],
}


def cache_table_arn() -> str:
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/fsmlog-cache-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_cache(redis_url: str) -> Iterator[Any]:
    from handlers.cache.redis import RedisCache

    cache = RedisCache(redis_url, prefix=f"t{uuid.uuid4().hex[:12]}:")
    try:
        yield cache
    finally:
        cache.close()


@pytest.fixture
def memcached_cache(memcached_url: str) -> Iterator[Any]:
    from handlers.cache.memcached import MemcachedCache

    cache = MemcachedCache(memcached_url, prefix=f"t{uuid.uuid4().hex[:12]}:")
    try:
        yield cache
    finally:
        cache.close()


@pytest.fixture
def dynamodb_cache(moto_server: str) -> Any:
    from handlers.cache.dynamodb import DynamoDBCache

    arn = cache_table_arn()
    return DynamoDBCache.create(arn, settings_for(moto_server, [arn]))


@pytest.fixture
def cloudwatch_metrics(moto_server: str) -> Any:
    from handlers.metrics.cloudwatch import CloudWatchMetrics

    arn = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:namespace/fsmlog-{uuid.uuid4().hex[:8]}"
    settings = settings_for(moto_server, [arn], METRICS_NAMESPACE=f"fsmlog-test-{uuid.uuid4().hex[:8]}")
    return CloudWatchMetrics.from_target(arn, settings)
