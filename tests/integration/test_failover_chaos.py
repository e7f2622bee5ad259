"""Failover between primary and secondary sources, and AWS_CHAOS fault injection, on real backends."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import pytest

from eventlog.chaos import ChaosProxy, with_chaos
from eventlog.errors import ChaosError, ServiceUnavailable, SettingsError
from eventlog.failover import FAILOVERS, FailoverProxy, with_failover
from eventlog.settings import load_settings
from handlers.cache.failover import TRIES, FailoverSteps
from handlers.cache.steps import DONE, TRIED, Ending, StepKey, as_steps, completed_ordinal, token_floor
from handlers.gate import Gate
from handlers.metrics import Datum
from tests.fixtures.servers import ACCOUNT, REGION, settings_for

pytestmark = pytest.mark.integration

REDIS_ARN = f"arn:aws:elasticache:{REGION}:{ACCOUNT}:replicationgroup:fsmlog-primary"
LEASE = 30.0
DEDUPE = 300.0


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


def _no_sleep(_s: float) -> None:
    pass


def steps_pair(primary: Any, secondary: Any, **options: Any) -> FailoverSteps:
    """The cache's failover pair, moving leases at the primary's first failure (as with
    ``CACHE_FAILOVER_SECONDS=0``), without sleeping between tries."""
    options.setdefault("failover_after_s", 0.0)
    options.setdefault("sleep", _no_sleep)
    return FailoverSteps(as_steps(primary), as_steps(secondary), **options)


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


def test_the_generic_proxy_refuses_the_cache(tmp_path: Path) -> None:
    from handlers.cache.sqlite import SqliteCache

    p, s = sqlite_target(tmp_path, "p"), sqlite_target(tmp_path, "s")
    with pytest.raises(SettingsError, match=r"handlers\.cache\.failover"):
        with_failover("CACHE", SqliteCache(p), SqliteCache(s), None)


def test_every_admission_asks_the_primary_first_while_leases_go_to_the_secondary(
        redis_url: str, moto_server: str) -> None:
    from handlers.cache.redis import RedisCache

    secondary, _, _ = ddb_cache(moto_server)
    settings = load_settings(environ={}, ENDPOINTS={REDIS_ARN: redis_url}, AWS_CHAOS={REDIS_ARN: {"ConnectionError": 1.0}})
    primary = with_chaos(RedisCache.from_target(REDIS_ARN, settings), REDIS_ARN, settings)
    pair = steps_pair(primary, secondary)
    gate = Gate(pair, "w", LEASE, DEDUPE)
    before = FAILOVERS["CACHE"]
    cids = [f"m-{uuid.uuid4().hex[:10]}" for _ in range(5)]
    for n, cid in enumerate(cids, 1):
        adm = gate.begin(cid, 1)
        assert adm.token is not None and adm.token >= token_floor(1, 0) and adm.side == "secondary"
        assert primary.injected >= n * TRIES  # the primary was asked (and tried again) every time
        assert not adm.known  # the primary cannot be read: the gate would ask the log
        gate.end(cid, 1, adm.token, True)
    assert (pair.failovers, pair.split, pair.unverified) == (5, 5, 5)
    assert FAILOVERS["CACHE"] - before == 5
    assert isinstance(pair.last_error, ChaosError) and pair.name == REDIS_ARN
    # the leases and marks really are on the secondary, and the leases were given back there
    assert [v.mark for v in secondary.peek_steps([StepKey(c, 1, 0) for c in cids])] == [completed_ordinal(1)] * 5
    assert all(v.token is not None for v in secondary.begin_steps([StepKey(c, 2, 0) for c in cids], "other", LEASE))


def test_a_lease_taken_on_the_secondary_stays_there_while_admissions_return_to_the_primary(
        redis_url: str, tmp_path: Path) -> None:
    from handlers.cache.redis import RedisCache
    from handlers.cache.sqlite import SqliteCache

    settings = load_settings(environ={}, ENDPOINTS={REDIS_ARN: redis_url}, AWS_CHAOS={REDIS_ARN: {"ConnectionError": 1.0}})
    switch = Switch(failing=True)
    raw_primary = RedisCache(redis_url, name=REDIS_ARN, prefix=f"t{uuid.uuid4().hex[:8]}:")
    secondary = SqliteCache(sqlite_target(tmp_path, "secondary"))
    pair = steps_pair(with_chaos(raw_primary, REDIS_ARN, settings, rng=switch), secondary)
    gate = Gate(pair, "w", LEASE, DEDUPE)

    a = gate.begin("A", 1)  # primary down: A's lease is taken on the secondary
    assert a.side == "secondary" and secondary.holder("lease:A") == ("w", a.token)

    switch.failing = False  # the primary recovers: no cool-down, the very next admission is on it
    b = gate.begin("B", 1)
    assert b.side == "primary" and secondary.holder("lease:B") is None
    assert raw_primary.acquire("lease:B", "other", LEASE) is None  # held on the primary

    # A is renewed and ended on the secondary, where its lease is
    assert gate.renew([("A", a.token), ("B", b.token)]) == [True, True]
    assert raw_primary.acquire("lease:A", "other", LEASE) is not None  # the primary never held A
    gate.end("A", 1, a.token, True)
    assert secondary.holder("lease:A") is None
    assert raw_primary.peek_steps([StepKey("A", 1, 0)])[0].mark == completed_ordinal(1)  # the mark was copied over
    gate.end("B", 1, b.token, True)
    assert secondary.peek_steps([StepKey("B", 1, 0)])[0].mark == completed_ordinal(1)
    assert (pair.failovers, pair.split) == (1, 1)


def test_marks_written_on_either_side_are_seen_by_an_admission_on_the_other(redis_url: str, tmp_path: Path) -> None:
    from handlers.cache.redis import RedisCache
    from handlers.cache.sqlite import SqliteCache

    settings = load_settings(environ={}, ENDPOINTS={REDIS_ARN: redis_url}, AWS_CHAOS={REDIS_ARN: {"ConnectionError": 1.0}})
    switch = Switch(failing=False)
    raw_primary = RedisCache(redis_url, name=REDIS_ARN, prefix=f"t{uuid.uuid4().hex[:8]}:")
    secondary = SqliteCache(sqlite_target(tmp_path, "secondary"))
    pair = steps_pair(with_chaos(raw_primary, REDIS_ARN, settings, rng=switch), secondary)
    gate = Gate(pair, "w", LEASE, DEDUPE)

    secondary.end_steps([Ending("S", 3, 0, None, DONE)], "earlier", DEDUPE)  # only the secondary knows
    raw_primary.end_steps([Ending("P", 3, 1, None, TRIED)], "earlier", DEDUPE)  # only the primary knows
    on_primary = gate.begin("S", 3)
    assert on_primary.side == "primary" and on_primary.done
    gate.release("S", on_primary.token)
    nxt = gate.begin("S", 4)
    # the secondary's mark proves step 3 handled, but the primary itself never followed S up to step 4:
    # not known, so the gate asks the log (a stale mark elsewhere must not hide that the primary forgot)
    assert nxt.side == "primary" and not nxt.known and not nxt.done
    gate.release("S", nxt.token)

    switch.failing = True  # the whole primary fails: its marks cannot be read either
    unread = gate.begin("P", 3, 2)
    assert unread.side == "secondary" and not unread.known and not unread.done  # the gate asks the log
    gate.release("P", unread.token)
    switch.failing = False
    both = Gate(pair, "other", LEASE, DEDUPE).begin("P", 3, 1)
    assert both.side == "primary" and both.done


def test_a_stopped_redis_server_fails_over_to_dynamodb_and_back(redis_server_process: Any, moto_server: str) -> None:
    from handlers.cache.redis import RedisCache

    secondary, _, _ = ddb_cache(moto_server)
    url = f"redis://127.0.0.1:{redis_server_process.port}/0"
    primary = RedisCache(url, prefix=f"t{uuid.uuid4().hex[:8]}:", socket_timeout=1.0)
    pair = steps_pair(primary, secondary)
    gate = Gate(pair, "w", LEASE, DEDUPE)
    first = gate.begin("before", 1)
    assert first.side == "primary" and pair.failovers == 0
    gate.end("before", 1, first.token, True)
    redis_server_process.stop()
    try:
        during = gate.begin("during", 1)
        assert during.token is not None and during.side == "secondary"
        assert gate.renew([("during", during.token)]) == [True]
        gate.end("during", 1, during.token, True)
        assert isinstance(pair.last_error, ServiceUnavailable) and pair.split == 1
        assert secondary.peek_steps([StepKey("during", 1, 0)])[0].mark == completed_ordinal(1)
    finally:
        redis_server_process.restart()
    # back (and empty: no persistence): admissions are on the primary, which learns from DynamoDB
    again = Gate(pair, "other", LEASE, DEDUPE).begin("during", 1)
    assert again.side == "primary" and again.done
    nxt = Gate(pair, "other", LEASE, DEDUPE).begin("during", 2)
    assert nxt.side == "primary" and not nxt.known and not nxt.done  # the emptied primary: the log decides
    assert pair.split == 1
    primary.close()


def test_both_sides_down_raises_naming_both_targets(tmp_path: Path) -> None:
    from handlers.cache.sqlite import SqliteCache

    p, s = sqlite_target(tmp_path, "p"), sqlite_target(tmp_path, "s")
    settings = load_settings(environ={}, AWS_CHAOS={p: {"ConnectionError": 1.0}, s: {"RequestTimeout": 1.0}})
    pair = steps_pair(with_chaos(SqliteCache(p), p, settings), with_chaos(SqliteCache(s), s, settings))
    with pytest.raises(ServiceUnavailable) as info:
        Gate(pair, "w", LEASE, DEDUPE).begin("x", 1)
    message = str(info.value)
    assert p in message and s in message
    assert "ConnectionError" in message and "RequestTimeout" in message


def test_open_source_wires_chaos_and_failover_from_settings(redis_url: str, memcached_url: str) -> None:
    from handlers.cache.composed import ComposedSteps
    from handlers.wiring import open_source

    mc_arn = f"arn:aws:elasticache:{REGION}:{ACCOUNT}:cluster:fsmlog-mc"
    sources = dict(PRIMARY_CACHE_SOURCE=REDIS_ARN, SECONDARY_CACHE_SOURCE=mc_arn,
                   ENDPOINTS={REDIS_ARN: redis_url, mc_arn: memcached_url}, AWS_CHAOS={"redis": {"ConnectionError": 1.0}})
    pair = open_source("CACHE", load_settings(environ={}, CACHE_FAILOVER_SECONDS=0, **sources))
    assert isinstance(pair, FailoverSteps) and pair.name == REDIS_ARN
    assert isinstance(pair.primary, ChaosProxy) and isinstance(pair.secondary, ComposedSteps)
    cid = uuid.uuid4().hex
    adm = Gate(pair, "w", LEASE, DEDUPE).begin(cid, 1)
    assert adm.token is not None and adm.side == "secondary" and pair.failovers == 1
    assert Gate(pair, "other", LEASE, DEDUPE).begin(cid, 1).token is None  # held on memcached
    pair.close()

    # by default a primary that has failed for less than CACHE_FAILOVER_SECONDS hands the batch back
    patient = open_source("CACHE", load_settings(environ={}, **sources))
    assert patient.failover_after_s == 1.0
    with pytest.raises(ServiceUnavailable, match="CACHE_FAILOVER_SECONDS"):
        Gate(patient, "w", LEASE, DEDUPE).begin(uuid.uuid4().hex, 1)
    assert patient.handed_back == 1 and patient.failovers == 0
    patient.close()


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
    from handlers.environment.sqlite import SqliteEnvironment

    p, s = sqlite_target(tmp_path, "p"), sqlite_target(tmp_path, "s")
    settings = load_settings(environ={}, AWS_CHAOS={p: {"ConnectionError": 1.0}})
    pair = pickle.loads(pickle.dumps(steps_pair(with_chaos(SqliteCache(p), p, settings), SqliteCache(s))))
    adm = Gate(pair, "w", LEASE, DEDUPE).begin("z", 1)
    assert adm.token is not None and adm.side == "secondary" and pair.failovers == 1
    assert SqliteCache(s).holder("lease:z") == ("w", adm.token)
    copy = pickle.loads(pickle.dumps(pair))  # carries the side of the lease it holds
    gate = Gate(copy, "w", LEASE, DEDUPE)
    assert gate.renew([("z", adm.token)]) == [True]
    gate.end("z", 1, adm.token, True)
    assert SqliteCache(s).holder("lease:z") is None

    e1, e2 = sqlite_target(tmp_path, "e1"), sqlite_target(tmp_path, "e2")
    env_settings = load_settings(environ={}, AWS_CHAOS={e1: {"ConnectionError": 1.0}})
    env = with_failover("ENVIRONMENT", with_chaos(SqliteEnvironment(e1), e1, env_settings), SqliteEnvironment(e2),
                        env_settings)
    env_copy = pickle.loads(pickle.dumps(env))
    assert isinstance(env_copy, FailoverProxy)
    env_copy.put("k", b"v")
    assert env_copy.served == {"secondary": 1} and SqliteEnvironment(e2).get("k") == b"v"
