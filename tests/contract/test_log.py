"""Contract of EventLog / ReadableLog, for every stream backend."""

from __future__ import annotations

import uuid

import pytest

from eventlog.log import EventLog, LogRecord, OutRecord, ReadableLog


def _key() -> str:
    return f"cid-{uuid.uuid4().hex}"


def _readable(log) -> ReadableLog:
    if not isinstance(log, ReadableLog):
        pytest.skip(f"{type(log).__name__} is append-only")
    return log


def _all_of(log: ReadableLog, keys: set[str], page: int = 1000, after: str | None = None) -> list[LogRecord]:
    """Every record of ``keys`` after ``after``, paging through the rest of the log with ``read``."""
    out: list[LogRecord] = []
    while True:
        batch = log.read(after, page)
        if not batch:
            return out
        out.extend(r for r in batch if r.key in keys)
        after = batch[-1].position


def test_is_an_event_log(log):
    assert isinstance(log, EventLog)
    assert isinstance(log.name, str) and log.name


def test_append_returns_one_position_per_record(log):
    key = _key()
    positions = log.append([OutRecord(key, b"a"), OutRecord(key, b"b"), OutRecord(_key(), b"c")])
    assert len(positions) == 3
    assert all(isinstance(p, str) and p for p in positions)
    assert len(set(positions)) == 3


def test_empty_append_is_a_no_op(log):
    assert log.append([]) == []
    if isinstance(log, ReadableLog):
        key = _key()
        log.append([OutRecord(key, b"only")])
        log.append([])
        assert [r.data for r in log.read_key(key)] == [b"only"]


def test_read_returns_records_in_append_order_with_their_positions(log):
    log = _readable(log)
    key, other = _key(), _key()
    first = log.append([OutRecord(key, b"0"), OutRecord(other, b"x"), OutRecord(key, b"1")])
    second = log.append([OutRecord(key, b"2"), OutRecord(other, b"y")])
    records = _all_of(log, {key, other})
    mine = [r for r in records if r.key == key]
    assert [r.data for r in mine] == [b"0", b"1", b"2"]
    assert [r.position for r in mine] == [first[0], first[2], second[0]]
    assert [r.data for r in records if r.key == other] == [b"x", b"y"]
    assert {r.position for r in records} == set(first) | set(second)


def test_positions_strictly_increase(log):
    """In the log's own order: reading after any position gives exactly the records appended later."""
    log = _readable(log)
    key = _key()
    positions = []
    for i in range(4):
        positions += log.append([OutRecord(key, bytes([i])), OutRecord(key, bytes([i, i]))])
    assert len(set(positions)) == len(positions)
    assert [r.position for r in log.read_key(key)] == positions
    for i, position in enumerate(positions):
        assert [r.position for r in _all_of(log, {key}, after=position)] == positions[i + 1:]
    if all(p.isdigit() for p in positions):  # plain numbers (the embedded log) also compare as numbers
        numbers = [int(p) for p in positions]
        assert all(later > earlier for earlier, later in zip(numbers, numbers[1:]))


def test_read_after_a_position_returns_only_later_records(log):
    log = _readable(log)
    key = _key()
    positions = log.append([OutRecord(key, bytes([i])) for i in range(5)])
    later = _all_of(log, {key}, after=positions[1])
    assert [r.data for r in later] == [bytes([2]), bytes([3]), bytes([4])]


def test_read_honours_limit_and_pages_through_everything(log):
    log = _readable(log)
    key = _key()
    log.append([OutRecord(key, bytes([i])) for i in range(7)])
    assert 0 < len(log.read(None, 2)) <= 2
    paged = _all_of(log, {key}, page=3)
    assert [r.data for r in paged] == [bytes([i]) for i in range(7)]


def test_read_key_filters_one_key(log):
    log = _readable(log)
    key, other = _key(), _key()
    positions = log.append([OutRecord(key, b"a"), OutRecord(other, b"b"), OutRecord(key, b"c")])
    got = log.read_key(key)
    assert [(r.key, r.data) for r in got] == [(key, b"a"), (key, b"c")]
    assert [r.data for r in log.read_key(key, after=positions[0])] == [b"c"]
    assert log.read_key(_key()) == []


def test_data_comes_back_byte_for_byte(log):
    log = _readable(log)
    key = _key()
    raw = bytes(range(256)) + b"\x00\xff" * 100
    log.append([OutRecord(key, raw)])
    assert [r.data for r in log.read_key(key)] == [raw]
