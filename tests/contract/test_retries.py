"""Contract of RetryStore: scheduling, due-ness, claims, done."""

from __future__ import annotations

import time
import uuid

import pytest

from handlers.retries import RetryStore, ScheduledRetry


def _delivers_through_trigger(store) -> bool:
    """Kinesis and SNS cannot delay: their retries arrive through the trigger, never from ``due``."""
    return any(s in store.name for s in (":kinesis:", ":sns:"))


def _delaying(store):
    if _delivers_through_trigger(store):
        pytest.skip("this store cannot delay; retries arrive through the trigger")
    return store


def _collect(store, wanted: set[bytes], tries: int = 10) -> dict[bytes, str]:
    """Poll ``due`` until every wanted record came back (services may return a sample per call)."""
    found: dict[bytes, str] = {}
    for _ in range(tries):
        for item in store.due(time.time(), 10):
            if item.data in wanted:
                found[item.data] = item.handle
        if set(found) == wanted:
            break
    return found


def _payload() -> bytes:
    return b"retry-" + uuid.uuid4().bytes


def test_is_a_retry_store(retries):
    assert isinstance(retries, RetryStore)


def test_stores_that_cannot_delay_return_nothing_from_due(retries):
    if not _delivers_through_trigger(retries):
        pytest.skip("this store delays retries itself")
    retries.schedule([ScheduledRetry("cid", _payload(), time.time() - 1)])
    assert retries.due(time.time(), 10) == []


def test_not_due_before_its_time(retries):
    store = _delaying(retries)
    later = [_payload() for _ in range(3)]
    store.schedule([])
    store.schedule([ScheduledRetry(f"cid-later-{i}", data, time.time() + 3600) for i, data in enumerate(later)])
    assert not {item.data for item in store.due(time.time(), 10)} & set(later)


def test_due_after_its_time(retries):
    store = _delaying(retries)
    data = _payload()
    store.schedule([ScheduledRetry("cid-now", data, time.time() - 1)])
    found = _collect(store, {data})
    assert set(found) == {data}
    assert isinstance(found[data], str)


def test_a_claimed_retry_is_not_returned_again_and_done_removes_it(retries):
    store = _delaying(retries)
    a, b = _payload(), _payload()
    store.schedule([ScheduledRetry("cid-a", a, time.time() - 2), ScheduledRetry("cid-b", b, time.time() - 1)])
    found = _collect(store, {a, b})
    assert set(found) == {a, b}
    again = {item.data for item in store.due(time.time(), 10)}
    assert not again & {a, b}
    store.done([found[a], found[b]])
    assert not {item.data for item in store.due(time.time(), 10)} & {a, b}


def test_due_honours_limit(retries):
    store = _delaying(retries)
    store.schedule([ScheduledRetry(f"cid-{i}", _payload(), time.time() - 1) for i in range(5)])
    got = []
    for _ in range(10):  # services may answer a poll with nothing even when items wait
        got = store.due(time.time(), 2)
        if got:
            break
    assert 0 < len(got) <= 2


def test_done_of_nothing_removes_nothing(retries):
    store = _delaying(retries)
    data = _payload()
    store.schedule([ScheduledRetry("cid-x", data, time.time() - 1)])
    store.done([])
    assert set(_collect(store, {data})) == {data}
