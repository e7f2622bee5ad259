"""Cache backends against real servers (redis-server, memcached, DynamoDB on moto over HTTP),
and the metrics backends (CloudWatch on moto, EMF on stdout)."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from handlers.metrics import Datum
from tests.fixtures.servers import ACCOUNT, REGION, settings_for

pytestmark = pytest.mark.integration

BACKENDS = ("redis", "memcached", "dynamodb")


def _dynamodb_cache(moto_server: str) -> Any:
    from handlers.cache.dynamodb import DynamoDBCache

    arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/fsmlog-cache-{uuid.uuid4().hex[:10]}"
    return DynamoDBCache.create(arn, settings_for(moto_server, [arn]))


@pytest.fixture(params=BACKENDS)
def cache(request: pytest.FixtureRequest) -> Iterator[Any]:
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    if request.param == "redis":
        from handlers.cache.redis import RedisCache

        backend = RedisCache(request.getfixturevalue("redis_url"), prefix=prefix)
    elif request.param == "memcached":
        from handlers.cache.memcached import MemcachedCache

        backend = MemcachedCache(request.getfixturevalue("memcached_url"), prefix=prefix)
    else:
        backend = _dynamodb_cache(request.getfixturevalue("moto_server"))
    yield backend
    close = getattr(backend, "close", None)
    if close is not None:
        close()


def eventually(check: Callable[[], Any], what: str, within_s: float = 15.0) -> Any:
    """Poll until ``check()`` is truthy (expiry is the server's business, so we wait for it)."""
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within_s} s")
        time.sleep(0.2)


def test_fence_tokens_strictly_increase_across_owners_and_releases(cache: Any) -> None:
    key = "lease:m-1"
    tokens = []
    for i in range(6):
        owner = f"worker-{i % 3}"
        token = cache.acquire(key, owner, 30)
        assert isinstance(token, int)
        tokens.append(token)
        if i % 2:  # re-entrant acquire by the holder also gets a fresh, larger token
            again = cache.acquire(key, owner, 30)
            assert again is not None and again > token
            tokens.append(again)
            token = again
        cache.release(key, owner, token)
    assert tokens == sorted(set(tokens)), tokens


def test_tokens_are_per_key(cache: Any) -> None:
    a1 = cache.acquire("lease:a", "w", 30)
    b1 = cache.acquire("lease:b", "w", 30)
    assert a1 is not None and b1 is not None
    cache.release("lease:a", "w", a1)
    a2 = cache.acquire("lease:a", "x", 30)
    assert a2 is not None and a2 > a1
    assert cache.acquire("lease:b", "x", 30) is None  # b is still held by w


def test_lease_is_exclusive_and_release_needs_owner_and_token(cache: Any) -> None:
    key = "lease:m-2"
    token = cache.acquire(key, "alice", 30)
    assert token is not None
    assert cache.acquire(key, "bob", 30) is None
    cache.release(key, "bob", token)  # not bob's lease
    cache.release(key, "alice", token - 1)  # stale token
    assert cache.acquire(key, "bob", 30) is None
    cache.release(key, "alice", token)
    bob = cache.acquire(key, "bob", 30)
    assert bob is not None and bob > token
    assert cache.acquire(key, "alice", 30) is None


def test_racing_owners_get_exactly_one_lease(cache: Any, request: pytest.FixtureRequest) -> None:
    if request.node.callspec.params["cache"] == "dynamodb":
        # moto's threaded server applies concurrent conditional writes to one item without
        # isolation (8 racing owners got two winners in 2-3 of 60 rounds); DynamoDB serialises
        # them per item, and so does the serial server this race runs on instead
        cache = _dynamodb_cache(request.getfixturevalue("serial_moto_server"))
    key = "lease:race"
    results: dict[str, int | None] = {}
    barrier = threading.Barrier(8)

    def contend(owner: str) -> None:
        barrier.wait()
        results[owner] = cache.acquire(key, owner, 30)

    threads = [threading.Thread(target=contend, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o, tok in results.items() if tok is not None]
    assert len(results) == 8
    assert len(winners) == 1, results


def test_expired_lease_can_be_taken_with_a_larger_token(cache: Any) -> None:
    key = "lease:m-3"
    first = cache.acquire(key, "crashed-worker", 1)
    assert first is not None
    assert cache.acquire(key, "next-worker", 30) is None
    second = eventually(lambda: cache.acquire(key, "next-worker", 30), "lease expiry")
    assert second > first
    # the crashed worker's late release must not free the new holder's lease
    cache.release(key, "crashed-worker", first)
    assert cache.acquire(key, "third-worker", 30) is None


def test_flags_set_once_and_expire(cache: Any) -> None:
    assert not cache.marked("done:m-4:3")
    assert cache.mark("done:m-4:3", 60) is True
    assert cache.mark("done:m-4:3", 60) is False
    assert cache.marked("done:m-4:3")
    assert not cache.marked("done:m-4:4")

    assert cache.mark("done:m-4:5", 1) is True
    eventually(lambda: not cache.marked("done:m-4:5"), "flag expiry")
    assert cache.mark("done:m-4:5", 60) is True


def test_flags_and_leases_on_the_same_key_do_not_collide(cache: Any) -> None:
    token = cache.acquire("same", "w", 30)
    assert cache.mark("same", 60) is True
    assert cache.acquire("same", "other", 30) is None
    cache.release("same", "w", token)
    again = cache.acquire("same", "other", 30)
    assert again is not None and again > token
    assert cache.marked("same")


# --- backend specifics ------------------------------------------------------------------------------


def test_redis_tokens_keep_increasing_when_the_counter_is_lost(redis_url: str) -> None:
    import redis

    from handlers.cache.redis import RedisCache
    from handlers.cache.steps import token_floor

    cache = RedisCache(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    first = cache.acquire("lease:x", "w", 30, token_floor(3, 0, 10))  # the floor the gate derives
    cache.release("lease:x", "w", first)
    _, fence = cache._keys("lease:x")
    redis.Redis.from_url(redis_url).delete(fence)  # as after a restart without persistence
    second = cache.acquire("lease:x", "w", 30, token_floor(3, 0, 25))  # the same record, 15 ms later
    assert second > first


def test_memcached_tokens_keep_increasing_when_the_counter_is_evicted(memcached_url: str) -> None:
    from handlers.cache.memcached import MemcachedCache, _safe
    from handlers.cache.steps import token_floor

    cache = MemcachedCache(memcached_url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    first = cache.acquire("lease:x", "w", 30, token_floor(3, 0, 10))  # the floor the gate derives
    cache.release("lease:x", "w", first)
    cache._client.delete(_safe(cache.prefix, "fence:lease:x"))
    second = cache.acquire("lease:x", "w", 30, token_floor(3, 0, 25))  # the same record, 15 ms later
    assert second > first


def test_memcached_long_and_spaced_keys_are_hashed(memcached_url: str) -> None:
    from handlers.cache.memcached import MemcachedCache

    cache = MemcachedCache(memcached_url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    long_key = "lease:" + "x" * 400
    token = cache.acquire(long_key, "w", 30)
    assert token is not None and cache.acquire(long_key, "v", 30) is None
    assert cache.mark("done:with space:1", 60) and cache.marked("done:with space:1")
    assert not cache.marked("done:with space:2")


def test_dynamodb_acquire_is_one_call(moto_server: str) -> None:
    from eventlog.aws import API_CALLS

    cache = _dynamodb_cache(moto_server)
    before = API_CALLS[("dynamodb", "UpdateItem")]
    total = sum(API_CALLS.values())
    assert cache.acquire("lease:one", "w", 30) is not None
    assert cache.acquire("lease:one", "other", 30) is None
    assert API_CALLS[("dynamodb", "UpdateItem")] - before == 2
    assert sum(API_CALLS.values()) - total == 2


def test_dynamodb_flags_carry_a_ttl_attribute(moto_server: str) -> None:
    import boto3

    cache = _dynamodb_cache(moto_server)
    cache.mark("done:m:1", 3600)
    ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_server)
    item = ddb.get_item(TableName=cache.table, Key={"key": {"S": "F|done:m:1"}})["Item"]
    assert int(item["ttl"]["N"]) >= int(time.time()) + 3600
    ttl = ddb.describe_time_to_live(TableName=cache.table)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED" and ttl["AttributeName"] == "ttl"


def test_targets_resolve_elasticache_arns_and_urls(redis_url: str, memcached_url: str) -> None:
    from eventlog.settings import load_settings
    from handlers.cache.memcached import MemcachedCache
    from handlers.cache.redis import RedisCache
    from handlers.wiring import open_backend

    redis_arn = f"arn:aws:elasticache:{REGION}:{ACCOUNT}:replicationgroup:fsmlog-redis"
    mc_arn = f"arn:aws:elasticache:{REGION}:{ACCOUNT}:cluster:fsmlog-mc"
    settings = load_settings(environ={}, ENDPOINTS={redis_arn: redis_url, mc_arn: memcached_url})
    for target, cls in ((redis_arn, RedisCache), (redis_url, RedisCache), (mc_arn, MemcachedCache),
                        (memcached_url, MemcachedCache)):
        backend = open_backend("CACHE", target, settings)
        assert isinstance(backend, cls) and backend.name == target
        key = f"lease:{uuid.uuid4().hex}"
        assert backend.acquire(key, "w", 30) is not None
        backend.close()


def test_unreachable_servers_raise_service_unavailable() -> None:
    from eventlog.errors import ServiceUnavailable
    from handlers.cache.memcached import MemcachedCache
    from handlers.cache.redis import RedisCache
    from tests.fixtures.cache_servers import _free_port

    port = _free_port()  # nothing listens there
    for backend in (RedisCache(f"redis://127.0.0.1:{port}/0"), MemcachedCache(f"memcached://127.0.0.1:{port}")):
        with pytest.raises(ServiceUnavailable, match=f"127.0.0.1:{port}"):
            backend.acquire("lease:x", "w", 30)


# --- metrics -----------------------------------------------------------------------------------------


def test_cloudwatch_sends_1000_data_per_call(moto_server: str) -> None:
    import boto3

    from eventlog.aws import API_CALLS
    from handlers.metrics.cloudwatch import CloudWatchMetrics

    namespace = f"fsmlog-test-{uuid.uuid4().hex[:8]}"
    arn = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:namespace/{namespace}"
    metrics = CloudWatchMetrics.from_target(arn, settings_for(moto_server, [arn], METRICS_NAMESPACE=namespace))
    data = [Datum(f"m{i}", float(i), (("machine", "order"),)) for i in range(2500)]
    before = API_CALLS[("cloudwatch", "PutMetricData")]
    metrics.put(data)
    assert API_CALLS[("cloudwatch", "PutMetricData")] - before == 3

    cw = boto3.client("cloudwatch", region_name=REGION, endpoint_url=moto_server)
    names = set()
    for page in cw.get_paginator("list_metrics").paginate(Namespace=namespace):
        for m in page["Metrics"]:
            names.add(m["MetricName"])
            assert m["Dimensions"] == [{"Name": "machine", "Value": "order"}]
    assert names == {f"m{i}" for i in range(2500)}


def test_emf_prints_one_line_per_put_and_makes_no_calls() -> None:
    from eventlog.aws import API_CALLS
    from eventlog.settings import load_settings
    from handlers.metrics.emf import EmfMetrics
    from handlers.wiring import open_backend

    metrics = open_backend("METRICS", "emf:", load_settings(environ={}, METRICS_NAMESPACE="shop"))
    assert isinstance(metrics, EmfMetrics)
    metrics._stream = io.StringIO()
    calls = sum(API_CALLS.values())
    metrics.put([
        Datum("steps", 5, (("machine", "order"),)),
        Datum("failures", 1, (("machine", "order"),)),
        Datum("parked", 2, ()),
    ])
    assert sum(API_CALLS.values()) == calls
    lines = metrics._stream.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["steps"] == 5 and doc["failures"] == 1 and doc["parked"] == 2 and doc["machine"] == "order"
    directives = doc["_aws"]["CloudWatchMetrics"]
    assert {d["Namespace"] for d in directives} == {"shop"}
    by_dims = {tuple(d["Dimensions"][0]): sorted(m["Name"] for m in d["Metrics"]) for d in directives}
    assert by_dims == {("machine",): ["failures", "steps"], (): ["parked"]}


def test_emf_splits_only_conflicting_dimension_values() -> None:
    from handlers.metrics.emf import EmfMetrics

    metrics = EmfMetrics("shop", stream=io.StringIO())
    metrics.put([Datum("steps", 3, (("machine", "order"),)), Datum("steps", 4, (("machine", "refund"),))])
    docs = [json.loads(line) for line in metrics._stream.getvalue().splitlines()]
    assert sorted((d["machine"], d["steps"]) for d in docs) == [("order", 3), ("refund", 4)]
