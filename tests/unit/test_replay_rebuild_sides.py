"""``replay.rebuild`` over a stream with two sides, one of which fails the read.

Found by the failover soak: ``fsmlog replay machine ID --redispatch`` under 25% injected faults on the
primary exited 1 with "no machine with correlation id ...: no snapshot in the checkpoint store and no
record in <primary>" for a machine that existed. ``eventlog.sides.read_machine`` skips a side that fails
when the other answers (by design, with a warning), and ``rebuild`` then reads "no records" as "no such
machine". Half the log cannot say a machine does not exist: the error is now the failed side's.
"""

from __future__ import annotations

import pytest

from eventlog.backends.sqlite import SqliteLog
from eventlog.codec import encode
from eventlog.errors import FsmlogError, ServiceUnavailable
from eventlog.event import START, Event
from eventlog.failover import FailoverProxy
from eventlog.log import OutRecord
from replay.errors import UnknownCorrelationId
from replay.rebuild import rebuild


class _Down:
    """A primary stream whose reads fail (the records it holds cannot be read now)."""

    name = "sqlite:///primary.db"

    def append(self, records):
        raise ServiceUnavailable(f"{self.name} is down")

    def read(self, after, limit):
        raise ServiceUnavailable(f"{self.name} is down")

    def read_key(self, key, after=None):
        raise ServiceUnavailable(f"{self.name} is down")


class _NoSnapshots:
    def load(self, cid):
        return None


class _Services:
    def __init__(self, log):
        self.log = log
        self.checkpoints = _NoSnapshots()


@pytest.fixture
def secondary(tmp_path):
    log = SqliteLog(f"sqlite:///{tmp_path / 'secondary.db'}")
    yield log
    log.close()


def test_a_machine_on_the_readable_side_is_rebuilt_though_the_other_side_fails(secondary):
    ev = Event.create(START, "m-1", "order", "h1", 0, 0, "received", None, 1_700_000_000.0)
    secondary.append([OutRecord("m-1", encode(ev))])
    got = rebuild("m-1", _Services(FailoverProxy("STREAM", _Down(), secondary)))
    assert got.rebuilt_state.last == ev


def test_a_failed_side_is_not_read_as_no_such_machine(secondary):
    services = _Services(FailoverProxy("STREAM", _Down(), secondary))  # m-1's records are on the primary
    with pytest.raises(FsmlogError) as info:
        rebuild("m-1", services)
    assert not isinstance(info.value, UnknownCorrelationId), str(info.value)
    assert isinstance(info.value, ServiceUnavailable)  # the failed side's own error, its fields kept
