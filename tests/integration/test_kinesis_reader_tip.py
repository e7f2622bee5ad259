"""The Kinesis reader reads a shard to its tip, as ``MillisBehindLatest`` says, however sparse it is.

Issue 9, item 7: the reader gave up on a shard after 5 empty GetRecords pages,
which truncated scans and tails on a sparse shard: Kinesis answers empty pages
while the iterator walks through a stretch of the shard's retention that holds
no record (``MillisBehindLatest`` > 0), and only then the records after it.

moto answers every record at once, so the sparse stretch is played in front
of it: the first GetRecords calls on each iterator answer empty pages, still
behind the tip, before moto's own (real) answer.
"""

from __future__ import annotations

from typing import Any

import pytest

from eventlog.backends.kinesis import KinesisLog, at_tip
from eventlog.log import OutRecord
from tests.fixtures.servers import make_resources, settings_for

pytestmark = pytest.mark.integration

EMPTY_PAGES = 12  # well past the old reader's 5


class Sparse:
    """The kinesis API of a log, with ``empty`` empty pages (behind the tip) before each shard's records."""

    def __init__(self, api: Any, empty: int) -> None:
        self.api = api
        self.empty = empty
        self.calls: dict[str, int] = {}
        self.get_records = 0

    def __call__(self, operation: str, **params: Any) -> Any:
        if operation == "get_shard_iterator":
            answer = self.api(operation, **params)
            self.calls[answer["ShardIterator"]] = 0
            return answer
        if operation == "get_records":
            self.get_records += 1
            iterator = params["ShardIterator"]
            served = self.calls.get(iterator)
            if served is not None and served < self.empty:
                self.calls[iterator] = served + 1  # the same iterator goes on walking the empty stretch
                return {"Records": [], "NextShardIterator": iterator, "MillisBehindLatest": 86_400_000}
            self.calls.pop(iterator, None)
        return self.api(operation, **params)


@pytest.fixture
def stream(moto_server):
    arn = make_resources(moto_server, "kinesis")["kinesis"]
    return KinesisLog(arn, settings_for(moto_server, [arn]))


def test_read_reaches_records_after_many_empty_pages(stream):
    positions = stream.append([OutRecord(f"m-{i % 3}", f"r{i}".encode()) for i in range(7)])
    stream._api = Sparse(stream._api, EMPTY_PAGES)

    records = stream.read(None, 100)

    assert [r.position for r in records] == positions
    assert [r.data for r in records] == [f"r{i}".encode() for i in range(7)]


def test_read_key_and_read_after_a_position_reach_the_tail_too(stream):
    positions = stream.append([OutRecord("m", f"r{i}".encode()) for i in range(4)])
    stream._api = Sparse(stream._api, EMPTY_PAGES)
    assert [r.data for r in stream.read_key("m")] == [b"r0", b"r1", b"r2", b"r3"]
    assert [r.data for r in stream.read(positions[1], 100)] == [b"r2", b"r3"]


def test_a_read_at_the_tip_ends_without_walking_on(stream):
    stream.append([OutRecord("m", b"only")])
    sparse = Sparse(stream._api, 0)
    stream._api = sparse
    assert [r.data for r in stream.read(None, 100)] == [b"only"]
    assert sparse.get_records <= 2  # moto says MillisBehindLatest 0: the read stops there
    assert stream.read_shard(stream.shards()[0], None, 0) == []


def test_at_tip_reads_millis_behind_latest():
    assert at_tip({"MillisBehindLatest": 0})
    assert not at_tip({"MillisBehindLatest": 1})
    assert at_tip({})  # a service that leaves it out: the short page ends the read
