"""Contract of DeadLetterStore: park, list newest first, get, remove; raw bytes kept exactly."""

from __future__ import annotations

import uuid

from handlers.deadletters import DeadLetter, DeadLetterStore

RAW = b"\x00\x80\xff not msgpack \xc1" + bytes(range(256))


def _ours(store, ids: set[str]) -> list[DeadLetter]:
    return [d for d in store.list(limit=1000) if d.id in ids]


def test_is_a_dead_letter_store(dead_letters):
    assert isinstance(dead_letters, DeadLetterStore)


def test_park_then_get_keeps_every_field(dead_letters):
    source = f"sqlite:///test-{uuid.uuid4().hex}.db"
    letter_id = dead_letters.park("undecodable record", source, "42", RAW, 1_700_000_000.5)
    assert isinstance(letter_id, str) and letter_id
    letter = dead_letters.get(letter_id)
    assert letter == DeadLetter(letter_id, "undecodable record", source, "42", RAW, 1_700_000_000.5)
    assert type(letter.data) is bytes


def test_ids_are_distinct_for_distinct_records(dead_letters):
    ids = {dead_letters.park("same", "src", str(i), b"same", 1.0) for i in range(5)}
    ids |= {dead_letters.park("same", "src", "1", bytes([i]), 1.0) for i in range(5)}
    assert len(ids) == 10


def test_list_is_newest_first(dead_letters):
    older = dead_letters.park("unknown machine", "src", "1", b"old", 1_700_000_000.0)
    newer = dead_letters.park("unknown machine", "src", "2", b"new", 1_700_000_100.0)
    assert [d.id for d in _ours(dead_letters, {older, newer})] == [newer, older]
    assert [d.data for d in _ours(dead_letters, {older, newer})] == [b"new", b"old"]


def test_list_honours_limit(dead_letters):
    for i in range(3):
        dead_letters.park("r", "src", str(i), b"x", 1_700_000_000.0 + i)
    assert 0 < len(dead_letters.list(limit=2)) <= 2


def test_remove(dead_letters):
    letter_id = dead_letters.park("invalid event", "src", "7", RAW, 1_700_000_000.0)
    dead_letters.remove(letter_id)
    assert dead_letters.get(letter_id) is None
    assert _ours(dead_letters, {letter_id}) == []
    dead_letters.remove(letter_id)  # removing twice is harmless
    assert dead_letters.get(letter_id) is None


def test_get_unknown_is_none(dead_letters):
    assert dead_letters.get(uuid.uuid4().hex) is None


def test_the_same_record_parked_again_is_kept_once(dead_letters):
    """A redelivered batch parks its bad record again: the store keeps the first parking."""
    first = dead_letters.park("undecodable", "stream-x", "shard-1:42", b"\x93bad", 1000.0)
    again = dead_letters.park("undecodable", "stream-x", "shard-1:42", b"\x93bad", 2000.0)
    other = dead_letters.park("undecodable", "stream-x", "shard-1:43", b"\x93bad", 3000.0)
    assert first == again != other
    letters = [d for d in dead_letters.list() if d.position in ("shard-1:42", "shard-1:43")]
    assert sorted((d.position, d.time) for d in letters) == [("shard-1:42", 1000.0), ("shard-1:43", 3000.0)]
