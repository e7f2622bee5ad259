"""``eventlog.sides``: positions name their stream, and one machine is read from every side.

The rule (docs/GUARANTEES.md): whatever is written to a secondary is read from
there too. These tests pin the small API the engine, the worker and replay use
for that, on two embedded logs behind a ``FailoverProxy``.
"""

from __future__ import annotations

import logging
import random

import pytest

from eventlog.backends.sqlite import SqliteLog
from eventlog.chaos import ChaosProxy
from eventlog.errors import ServiceUnavailable
from eventlog.failover import FailoverProxy
from eventlog.log import OutRecord
from eventlog.sides import (
    PRIMARY,
    SECONDARY,
    read_machine,
    readable_sides,
    side_of,
    sides,
    split_position,
    tag_position,
)


@pytest.fixture
def logs(tmp_path):
    primary = SqliteLog(f"sqlite:///{tmp_path / 'a.db'}")
    secondary = SqliteLog(f"sqlite:///{tmp_path / 'b.db'}")
    yield primary, secondary, FailoverProxy("STREAM", primary, secondary)
    primary.close()
    secondary.close()


def put(log, key: str, *datas: bytes) -> list[str]:
    return log.append([OutRecord(key, d) for d in datas])


class _WriteOnly:
    """A stream fsmlog cannot read back (like SNS or SQS)."""

    name = "arn:aws:sns:us-east-1:123456789012:topic"

    def append(self, records):
        return [str(i) for i, _ in enumerate(records)]


class _Failing:
    def __init__(self, name: str):
        self.name = name

    def append(self, records):
        raise ServiceUnavailable(f"{self.name} is down")

    def read(self, after, limit):
        raise ServiceUnavailable(f"{self.name} is down")

    def read_key(self, key, after=None):
        raise ServiceUnavailable(f"{self.name} is down")


def test_a_plain_backend_is_one_primary_side(logs):
    primary, _, _ = logs
    assert sides(primary) == [(PRIMARY, primary)]
    assert readable_sides(primary) == [(PRIMARY, primary)]
    assert side_of(primary, SECONDARY) is None


def test_a_failover_proxy_has_both_sides_even_behind_chaos(logs):
    primary, secondary, proxy = logs
    assert sides(proxy) == [(PRIMARY, primary), (SECONDARY, secondary)]
    chaotic = FailoverProxy("STREAM", ChaosProxy(primary, "p", "STREAM", {}, random.Random(1)),
                            ChaosProxy(secondary, "s", "STREAM", {}, random.Random(2)))
    assert [name for name, _ in readable_sides(chaotic)] == [PRIMARY, SECONDARY]
    assert side_of(chaotic, SECONDARY).wrapped is secondary


def test_a_side_that_cannot_be_read_is_not_readable(logs):
    _, secondary, _ = logs
    proxy = FailoverProxy("STREAM", _WriteOnly(), secondary)
    assert readable_sides(proxy) == [(SECONDARY, secondary)]


@pytest.mark.parametrize("raw", ["17", "shardId-000000000001:49650000000000000000000000000000000000000000000002"])
def test_positions_name_their_side(raw):
    assert split_position(raw) == (PRIMARY, raw)  # untagged: the primary's
    assert tag_position(PRIMARY, raw) == raw
    tagged = tag_position(SECONDARY, raw)
    assert tagged == f"secondary|{raw}"
    assert split_position(tagged) == (SECONDARY, raw)
    assert tag_position(SECONDARY, tagged) == tagged  # tagging twice changes nothing
    assert split_position(None) == (PRIMARY, None)
    with pytest.raises(ValueError):
        tag_position("tertiary", raw)


def test_read_machine_is_the_union_of_both_sides_with_secondary_positions_tagged(logs):
    primary, secondary, proxy = logs
    put(primary, "m", b"p1", b"p2")
    put(primary, "other", b"x")
    put(secondary, "m", b"s1")
    records = read_machine(proxy, "m")
    assert [r.data for r in records] == [b"p1", b"p2", b"s1"]
    assert [split_position(r.position)[0] for r in records] == [PRIMARY, PRIMARY, SECONDARY]
    assert records[-1].position == "secondary|1"
    # the proxy's own read_key (the primary's) misses the secondary's record: the bug this fixes
    assert [r.data for r in proxy.read_key("m")] == [b"p1", b"p2"]


def test_a_secondary_position_limits_the_secondary_and_the_primary_is_read_whole(logs):
    primary, secondary, proxy = logs
    put(primary, "m", b"p1")
    first, _ = put(secondary, "m", b"s1", b"s2")
    records = read_machine(proxy, "m", after=tag_position(SECONDARY, first))
    assert sorted(r.data for r in records) == [b"p1", b"s2"]


def test_a_primary_position_limits_only_the_primary(logs):
    primary, secondary, proxy = logs
    first, _ = put(primary, "m", b"p1", b"p2")
    put(secondary, "m", b"s1")
    assert sorted(r.data for r in read_machine(proxy, "m", after=first)) == [b"p2", b"s1"]


def test_a_secondary_position_without_a_secondary_reads_the_primary_whole(logs, caplog):
    primary, _, _ = logs
    put(primary, "m", b"p1", b"p2")
    with caplog.at_level(logging.WARNING, logger="fsmlog.sides"):
        records = read_machine(primary, "m", after="secondary|1")
    assert [r.data for r in records] == [b"p1", b"p2"]
    assert "secondary" in caplog.text


def test_a_failing_side_is_skipped_with_a_warning_while_the_other_answers(logs, caplog):
    primary, secondary, _ = logs
    put(secondary, "m", b"s1")
    proxy = FailoverProxy("STREAM", _Failing("primary-db"), secondary)
    with caplog.at_level(logging.WARNING, logger="fsmlog.sides"):
        records = read_machine(proxy, "m")
    assert [r.data for r in records] == [b"s1"]
    assert "primary-db is down" in caplog.text


def test_when_every_side_fails_the_error_is_raised():
    proxy = FailoverProxy("STREAM", _Failing("a"), _Failing("b"))
    with pytest.raises(ServiceUnavailable, match="a is down"):
        read_machine(proxy, "m")
