"""Proxies keep the fast paths their backends declare, on every Python (``eventlog.proxy``).

From Python 3.12 a runtime protocol check looks attributes up statically, so a proxy that only
forwards with ``__getattr__`` stopped passing for the protocol its backend serves: behind
``AWS_CHAOS`` a SQLite/Redis/DynamoDB cache lost its batched step gate and ran the composed one,
behind a failover pair checkpoints lost their batched save. ``make test-pythons`` runs this file
on the oldest and the newest supported Python.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import pytest

from eventlog.chaos import ChaosProxy
from eventlog.errors import ChaosError
from eventlog.failover import FailoverProxy
from handlers.cache import Cache
from handlers.cache.composed import ComposedSteps
from handlers.cache.sqlite import SqliteCache
from handlers.cache.steps import StepCache, StepKey, as_steps
from handlers.retries import WaitingRetries
from handlers.retries.sqlite import SqliteRetries
from projections.checkpoints import BatchCheckpoints, CheckpointStore
from projections.checkpoints.sqlite import SqliteCheckpoints
from tests.plain_cache import PlainCache


def _chaos(backend, faults=None):
    return ChaosProxy(backend, "test-target", None, faults or {}, random.Random(1))


@pytest.fixture
def target(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fsmlog.db'}"


def test_a_chaos_proxy_passes_for_every_protocol_its_backend_serves(target):
    cache, checkpoints, retries = SqliteCache(target), SqliteCheckpoints(target), SqliteRetries(target)
    try:
        assert isinstance(_chaos(cache), StepCache) and isinstance(_chaos(cache), Cache)
        assert as_steps(_chaos(cache)).__class__.__name__ == "ChaosProxy[SqliteCache]"  # not composed
        assert isinstance(_chaos(checkpoints), BatchCheckpoints)
        assert isinstance(_chaos(retries), WaitingRetries)
    finally:
        for backend in (cache, checkpoints, retries):
            backend.close()


def test_a_proxy_over_a_plain_cache_still_takes_the_composed_path(target):
    cache = SqliteCache(target)
    try:
        proxy = _chaos(PlainCache(cache))
        assert isinstance(proxy, Cache) and not isinstance(proxy, StepCache)
        assert isinstance(as_steps(proxy), ComposedSteps)
    finally:
        cache.close()


def test_declared_methods_still_go_through_the_proxy(target):
    cache = SqliteCache(target)
    try:
        failing = _chaos(cache, {"ConnectionError": 1.0})
        with pytest.raises(ChaosError) as info:
            failing.peek_steps([StepKey("m", 0, 0)])
        assert info.value.operation == "peek_steps" and failing.injected == 1
        assert _chaos(cache).begin_steps([StepKey("m", 0, 0)], "w", 60.0)[0].token is not None
    finally:
        cache.close()


def test_a_failover_pair_declares_what_both_sides_serve(target, tmp_path: Path):
    batched = SqliteCheckpoints(target)

    class OneByOne:  # checkpoints with no batched save
        name = "one-by-one"

        def save(self, cid, version, data):
            return batched.save(cid, version, data)

        def load(self, cid):
            return batched.load(cid)

    try:
        both = FailoverProxy("CHECKPOINT", batched, _chaos(batched))
        assert isinstance(both, BatchCheckpoints)
        one_side = FailoverProxy("CHECKPOINT", batched, OneByOne())
        assert isinstance(one_side, CheckpointStore) and not isinstance(one_side, BatchCheckpoints)
    finally:
        batched.close()


def test_proxies_pickle_as_their_declaring_class(target):
    checkpoints = SqliteCheckpoints(target)
    try:
        pair = FailoverProxy("CHECKPOINT", checkpoints, _chaos(checkpoints))
        back = pickle.loads(pickle.dumps(pair))
        assert type(back) is type(pair) and isinstance(back, BatchCheckpoints)
        assert back.kind == "CHECKPOINT" and type(back.secondary) is type(pair.secondary)
        back.close()
    finally:
        checkpoints.close()


def test_a_proxy_without_its_own_name_passes_for_protocols_that_declare_one(target):
    """The testing kit's crash proxy has no ``name`` of its own: its log and retry store must still
    pass for ``ReadableLog`` and ``RetryStore`` (on 3.13 they did not)."""
    from eventlog.backends.sqlite import SqliteLog
    from eventlog.log import ReadableLog
    from fsmlog.testing.runner import _Crashable
    from handlers.retries import RetryStore

    log, retries = SqliteLog(target), SqliteRetries(target)
    try:
        crash_log, crash_retries = _Crashable(log, "append"), _Crashable(retries, "schedule")
        assert isinstance(crash_log, ReadableLog) and crash_log.name == log.name
        assert isinstance(crash_retries, RetryStore) and isinstance(crash_retries, WaitingRetries)
    finally:
        log.close()
        retries.close()
