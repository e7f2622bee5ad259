"""Failover between primary and secondary sources, and AWS_CHAOS fault injection, on real backends."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import pytest

from eventlog.chaos import ChaosProxy, with_chaos
from eventlog.errors import ChaosError, ServiceUnavailable, SettingsError
from eventlog.failover import FAILOVERS, FailoverProxy, machine_of, with_failover
from eventlog.settings import load_settings
from handlers.metrics import Datum
from tests.fixtures.servers import ACCOUNT, REGION, settings_for

pytestmark = pytest.mark.integration

REDIS_ARN = f"arn:aws:elasticache:{REGION}:{ACCOUNT}:replicationgroup:fsmlog-primary"


class Switch(random.Random):
    """An RNG for chaos whose draws are 0.0 (every fault fires) or 1.0 (none fires, even at probability 1)."""

    def __init__(self, failing: bool = True) -> None:
        super().__init__(0)
        self.failing = failing

    def random(self) -> float:
        return 0.0 if self.failing else 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sqlite_target(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}.db"


def ddb_cache(moto_server: str) -> tuple[Any, str, Any]:
    from handlers.cache.dynamodb import DynamoDBCache

    arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/fsmlog-cache-{uuid.uuid4().hex[:10]}"
    settings = settings_for(moto_server, [arn])
    return DynamoDBCache.create(arn, settings), arn, settings


# --- chaos -------------------------------------------------------------------------------------------


def test_no_chaos_entry_returns_the_backend_itself(tmp_path: Path) -> None:
    from handlers.cache.sqlite import SqliteCache

    target = sqlite_target(tmp_path, "c")
    cache = SqliteCache(target)
    settings = load_settings(environ={}, AWS_CHAOS={"kinesis": {"ProvisionedThroughputExceededException": 0.5}})
    assert with_chaos(cache, target, settings) is cache
    zero = load_settings(environ={}, AWS_CHAOS={"CACHE": {"Boom": 0.0}})
    assert with_chaos(cache, target, zero) is cache


def test_seeded_chaos_injects_the_configured_share_deterministically(tmp_path: Path) -> None:
    from handlers.cache.sqlite import SqliteCache

    target = sqlite_target(tmp_path, "c")
    settings = load_settings(environ={}, AWS_CHAOS={target: {"ProvisionedThroughputExceededException": 0.3}})

    def run() -> tuple[int, int, set[str]]:
        cache = with_chaos(SqliteCache(target), target, settings, rng=random.Random(42))
        assert isinstance(cache, ChaosProxy)
        failed = ok = 0
        messages = set()
        for i in range(1000):
            try:
                cache.mark(f"done:m:{i}", 60)
                ok += 1
            except ChaosError as exc:
                failed += 1
                messages.add(str(exc))
        return failed, ok, messages

    failed, ok, messages = run()
    # the same seed draws the same faults: the count is exact, and near the configured 30 %
    draws = random.Random(42)
    expected = sum(draws.random() < 0.3 for _ in range(1000))
    assert failed == expected and failed + ok == 1000
    assert 240 <= failed <= 360
    assert run()[0] == failed
    assert messages == {f"chaos: injected ProvisionedThroughputExceededException on {target} (mark)"}


def test_chaos_errors_are_service_unavailable_and_name_each_exception(tmp_path: Path) -> None:
    from handlers.environment.sqlite import SqliteEnvironment

    target = sqlite_target(tmp_path, "e")
    settings = load_settings(environ={}, AWS_CHAOS={"sqlite": {"ThrottlingException": 0.5, "InternalServerError": 1.0}})
    env = with_chaos(SqliteEnvironment(target), target, settings, rng=random.Random(7))
    seen = set()
    for _ in range(200):
        with pytest.raises(ServiceUnavailable) as info:
            env.put("x", b"1")
        assert isinstance(info.value, ChaosError)
        seen.add(str(info.value).split()[2])
    assert seen == {"ThrottlingException", "InternalServerError"}
    assert env.name == target


def test_chaos_matches_target_before_service_before_kind(tmp_path: Path) -> None:
    from handlers.cache.sqlite import SqliteCache
    from handlers.environment.sqlite import SqliteEnvironment

    target = sqlite_target(tmp_path, "shared")
    settings = load_settings(environ={}, AWS_CHAOS={
        "CACHE": {"KindFault": 1.0},
        "sqlite": {"ServiceFault": 1.0},
    })
    cache = with_chaos(SqliteCache(target), target, settings)
    env = with_chaos(SqliteEnvironment(target), target, settings)
    with pytest.raises(ChaosError, match="ServiceFault"):
        cache.acquire("lease:a", "w", 30)
    with pytest.raises(ChaosError, match="ServiceFault"):
        env.get("a")
    by_target = load_settings(environ={}, AWS_CHAOS={"CACHE": {"KindFault": 1.0}, target: {"TargetFault": 1.0}})
    with pytest.raises(ChaosError, match="TargetFault"):
        with_chaos(SqliteCache(target), target, by_target).marked("x")
    by_kind = load_settings(environ={}, AWS_CHAOS={"CACHE": {"KindFault": 1.0}})
    assert with_chaos(SqliteEnvironment(target), target, by_kind).get("a") is None  # not a cache
    with pytest.raises(ChaosError, match="KindFault"):
        with_chaos(SqliteCache(target), target, by_kind).mark("x", 1)


def test_chaos_on_a_redis_arn_and_non_interface_methods_pass(redis_url: str) -> None:
    from handlers.cache.redis import RedisCache

    settings = load_settings(environ={}, ENDPOINTS={REDIS_ARN: redis_url},
                             AWS_CHAOS={"redis": {"ConnectionError": 1.0}})
    cache = with_chaos(RedisCache.from_target(REDIS_ARN, settings), REDIS_ARN, settings)
    with pytest.raises(ChaosError, match=f"injected ConnectionError on {REDIS_ARN}"):
        cache.acquire("lease:x", "w", 30)
    cache.close()  # not part of the interface: never fails on purpose


def test_invalid_chaos_probability_names_the_setting(tmp_path: Path) -> None:
    from handlers.cache.sqlite import SqliteCache

    target = sqlite_target(tmp_path, "c")
    settings = load_settings(environ={}, AWS_CHAOS={"CACHE": {"Boom": 1.5}})
    with pytest.raises(SettingsError, match=r"AWS_CHAOS\['CACHE'\]\['Boom'\]"):
        with_chaos(SqliteCache(target), target, settings)


# --- failover ----------------------------------------------------------------------------------------


def test_machine_of_reads_the_correlation_id_from_cache_keys() -> None:
    assert machine_of("lease:abc") == "abc"
    assert machine_of("done:abc:12") == "abc"
    assert machine_of("tried:abc:12:3") == "abc"
    assert machine_of("abort:order:7") == "order:7"
    assert machine_of("lease:order:7") == "order:7"
    assert machine_of("plain") == "plain"


def test_every_call_is_served_by_the_secondary_while_the_primary_always_fails(
        redis_url: str, moto_server: str) -> None:
    from handlers.cache.redis import RedisCache

    secondary, ddb_arn, _ = ddb_cache(moto_server)
    settings = load_settings(environ={}, ENDPOINTS={REDIS_ARN: redis_url}, AWS_CHAOS={REDIS_ARN: {"ConnectionError": 1.0}})
    primary = with_chaos(RedisCache.from_target(REDIS_ARN, settings), REDIS_ARN, settings)
    clock = Clock()
    cache = with_failover("CACHE", primary, secondary, settings, clock=clock)
    before = FAILOVERS["CACHE"]
    calls = 0
    for i in range(5):
        key = f"lease:m{i}"
        token = cache.acquire(key, "w", 30)
        assert token is not None
        assert cache.mark(f"done:m{i}:1", 60) is True
        assert cache.marked(f"done:m{i}:1")
        cache.release(key, "w", token)
        calls += 4
        clock.now += 31  # past the cool-down: the primary is tried (and fails) again
    assert cache.served == {"secondary": calls}
    assert cache.failovers == calls and FAILOVERS["CACHE"] - before == calls
    assert primary.injected >= 5
    assert cache.name == REDIS_ARN
    # the data really is on the secondary
    assert secondary.marked("done:m3:1") and secondary.acquire("lease:m4", "other", 30) is not None


def test_a_machine_that_failed_over_keeps_its_lease_on_the_secondary(redis_url: str, tmp_path: Path) -> None:
    from handlers.cache.redis import RedisCache
    from handlers.cache.sqlite import SqliteCache

    settings = load_settings(environ={}, ENDPOINTS={REDIS_ARN: redis_url}, AWS_CHAOS={REDIS_ARN: {"ConnectionError": 1.0}})
    switch = Switch(failing=True)
    raw_primary = RedisCache(redis_url, name=REDIS_ARN, prefix=f"t{uuid.uuid4().hex[:8]}:")
    primary = with_chaos(raw_primary, REDIS_ARN, settings, rng=switch)
    secondary = SqliteCache(sqlite_target(tmp_path, "secondary"))
    clock = Clock()
    cache: FailoverProxy = with_failover("CACHE", primary, secondary, settings, clock=clock)

    a_token = cache.acquire("lease:A", "w", 300)  # primary down: A's lease is taken on the secondary
    assert a_token is not None and cache.sticky("A")
    assert secondary.holder("lease:A") == ("w", a_token)

    switch.failing = False  # the primary recovers ...
    clock.now += 5
    b_token = cache.acquire("lease:B", "w", 300)  # ... but is still skipped during the cool-down
    assert b_token is not None and secondary.holder("lease:B") is not None
    clock.now += 60  # cool-down over: new machines go to the primary again
    c_token = cache.acquire("lease:C", "w", 300)
    assert c_token is not None and secondary.holder("lease:C") is None
    assert raw_primary.acquire("lease:C", "other", 300) is None  # held on the primary

    # A stays on the secondary for every cache call
    assert cache.mark("done:A:1", 60) is True
    assert secondary.marked("done:A:1") and not raw_primary.marked("done:A:1")
    again = cache.acquire("lease:A", "w", 300)
    assert again is not None and again > a_token and secondary.holder("lease:A") == ("w", again)
    cache.release("lease:A", "w", again)
    assert secondary.holder("lease:A") is None
    assert raw_primary.acquire("lease:A", "other", 300) is not None  # never touched on the primary
    assert cache.served["primary"] == 1


def test_a_stopped_redis_server_fails_over_to_dynamodb(redis_server_process: Any, moto_server: str) -> None:
    from handlers.cache.redis import RedisCache

    secondary, _, settings = ddb_cache(moto_server)
    url = f"redis://127.0.0.1:{redis_server_process.port}/0"
    primary = RedisCache(url, prefix=f"t{uuid.uuid4().hex[:8]}:", socket_timeout=1.0)
    cache = with_failover("CACHE", primary, secondary, settings)
    assert cache.acquire("lease:before", "w", 30) is not None
    assert cache.served == {"primary": 1}
    redis_server_process.stop()
    try:
        token = cache.acquire("lease:during", "w", 30)
        assert token is not None and cache.sticky("during")
        assert cache.mark("done:during:1", 60) and cache.marked("done:during:1")
        assert cache.served["secondary"] == 3
        assert isinstance(cache.last_error, ServiceUnavailable)
    finally:
        redis_server_process.restart()


def test_both_sides_down_raises_naming_both_targets(tmp_path: Path) -> None:
    from handlers.cache.sqlite import SqliteCache

    p, s = sqlite_target(tmp_path, "p"), sqlite_target(tmp_path, "s")
    settings = load_settings(environ={}, AWS_CHAOS={p: {"ConnectionError": 1.0}, s: {"RequestTimeout": 1.0}})
    cache = with_failover("CACHE", with_chaos(SqliteCache(p), p, settings), with_chaos(SqliteCache(s), s, settings),
                          settings)
    with pytest.raises(ServiceUnavailable) as info:
        cache.acquire("lease:x", "w", 30)
    message = str(info.value)
    assert p in message and s in message
    assert "ConnectionError" in message and "RequestTimeout" in message


def test_open_source_wires_chaos_and_failover_from_settings(redis_url: str, memcached_url: str) -> None:
    from handlers.wiring import open_source

    mc_arn = f"arn:aws:elasticache:{REGION}:{ACCOUNT}:cluster:fsmlog-mc"
    settings = load_settings(
        environ={},
        PRIMARY_CACHE_SOURCE=REDIS_ARN,
        SECONDARY_CACHE_SOURCE=mc_arn,
        ENDPOINTS={REDIS_ARN: redis_url, mc_arn: memcached_url},
        AWS_CHAOS={"redis": {"ConnectionError": 1.0}},
    )
    cache = open_source("CACHE", settings)
    assert isinstance(cache, FailoverProxy) and cache.name == REDIS_ARN
    key = f"lease:{uuid.uuid4().hex}"
    token = cache.acquire(key, "w", 30)
    assert token is not None and cache.served == {"secondary": 1}
    assert cache.acquire(key, "other", 30) is None
    cache.close()


def test_reads_find_what_was_written_on_the_secondary_during_an_outage(tmp_path: Path) -> None:
    from handlers.environment.sqlite import SqliteEnvironment

    p, s = sqlite_target(tmp_path, "p"), sqlite_target(tmp_path, "s")
    settings = load_settings(environ={}, AWS_CHAOS={p: {"ServiceUnavailable": 1.0}})
    switch = Switch(failing=True)
    clock = Clock()
    primary = SqliteEnvironment(p)
    env = with_failover("ENVIRONMENT", with_chaos(primary, p, settings, rng=switch), SqliteEnvironment(s), settings,
                        clock=clock)
    env.put("big", b"payload")
    switch.failing = False
    clock.now += 60
    assert env.get("big") == b"payload"  # the primary has nothing; the secondary is asked
    assert primary.get("big") is None
    env.put("after", b"1")
    assert primary.get("after") == b"1"


def test_cloudwatch_serves_as_secondary_metrics(moto_server: str) -> None:
    import boto3

    from handlers.wiring import open_source

    namespace = f"fsmlog-test-{uuid.uuid4().hex[:8]}"
    primary = f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:namespace/{namespace}"
    secondary = f"arn:aws:cloudwatch:us-west-2:{ACCOUNT}:namespace/{namespace}"
    settings = settings_for(moto_server, [primary, secondary], METRICS_NAMESPACE=namespace,
                            PRIMARY_METRICS_SOURCE=primary, SECONDARY_METRICS_SOURCE=secondary,
                            AWS_CHAOS={primary: {"ThrottlingException": 1.0}})
    metrics = open_source("METRICS", settings)
    metrics.put([Datum("steps", 3.0, (("machine", "order"),))])
    assert metrics.served == {"secondary": 1}
    west = boto3.client("cloudwatch", region_name="us-west-2", endpoint_url=moto_server)
    east = boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=moto_server)
    assert [m["MetricName"] for m in west.list_metrics(Namespace=namespace)["Metrics"]] == ["steps"]
    assert east.list_metrics(Namespace=namespace)["Metrics"] == []


def test_proxies_survive_pickling_for_worker_processes(tmp_path: Path) -> None:
    import pickle

    from handlers.cache.sqlite import SqliteCache

    p, s = sqlite_target(tmp_path, "p"), sqlite_target(tmp_path, "s")
    settings = load_settings(environ={}, AWS_CHAOS={p: {"ConnectionError": 1.0}})
    cache = with_failover("CACHE", with_chaos(SqliteCache(p), p, settings), SqliteCache(s), settings)
    copy = pickle.loads(pickle.dumps(cache))
    token = copy.acquire("lease:z", "w", 30)
    assert token is not None and copy.served == {"secondary": 1} and copy.sticky("z")
    assert SqliteCache(s).holder("lease:z") == ("w", token)
