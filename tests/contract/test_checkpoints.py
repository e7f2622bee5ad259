"""Contract of CheckpointStore: conditional writes by version."""

from __future__ import annotations

import random
import threading
import uuid

from projections.checkpoints import CheckpointStore


def _cid() -> str:
    return f"cid-{uuid.uuid4().hex}"


def test_is_a_checkpoint_store(checkpoints):
    assert isinstance(checkpoints, CheckpointStore)


def test_load_missing_is_none(checkpoints):
    assert checkpoints.load(_cid()) is None


def test_first_save_is_stored(checkpoints):
    cid = _cid()
    assert checkpoints.save(cid, 3, b"\x00snap\xff") is True
    assert checkpoints.load(cid) == b"\x00snap\xff"


def test_newer_version_replaces_older_and_equal_are_refused(checkpoints):
    cid = _cid()
    assert checkpoints.save(cid, 5, b"v5")
    assert checkpoints.save(cid, 4, b"v4") is False
    assert checkpoints.load(cid) == b"v5"
    assert checkpoints.save(cid, 5, b"v5-again") is False
    assert checkpoints.load(cid) == b"v5"
    assert checkpoints.save(cid, 6, b"v6") is True
    assert checkpoints.load(cid) == b"v6"


def test_correlation_ids_are_independent(checkpoints):
    a, b = _cid(), _cid()
    assert checkpoints.save(a, 10, b"a10")
    assert checkpoints.save(b, 1, b"b1")
    assert checkpoints.load(a) == b"a10"
    assert checkpoints.load(b) == b"b1"


def test_concurrent_saves_keep_the_greatest_version(checkpoints):
    cid = _cid()
    versions = list(range(1, 13))
    random.Random(7).shuffle(versions)
    accepted: list[int] = []
    lock = threading.Lock()

    def save(v: int) -> None:
        if checkpoints.save(cid, v, f"v{v}".encode()):
            with lock:
                accepted.append(v)

    threads = [threading.Thread(target=save, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert checkpoints.load(cid) == b"v12"
    assert 12 in accepted


def test_save_many_saves_a_batch_each_only_over_an_older_version(checkpoints):
    """A batch's snapshots go out together (one transaction or one round trip), with ``save``'s rule each."""
    from projections.checkpoints import BatchCheckpoints

    assert isinstance(checkpoints, BatchCheckpoints)
    a, b, c = (f"m-{uuid.uuid4().hex}" for _ in range(3))
    assert checkpoints.save(b, 5, b"b5")
    assert checkpoints.save_many([(a, 1, b"a1"), (b, 4, b"b4"), (c, 2, b"c2")]) == [True, False, True]
    assert checkpoints.save_many([]) == []
    assert (checkpoints.load(a), checkpoints.load(b), checkpoints.load(c)) == (b"a1", b"b5", b"c2")
