"""A redispatched wait whose machine the cache then forgot (a Redis restart, an eviction, a flush).

Found by the failover soak's Redis variant: a parent in ``wait: children`` whose join had failed was
redispatched (``fsmlog replay machine ID --redispatch`` appends the wait as a retry record, retries 1);
every ``children_done`` sent after that was parked as a late event ("arrived after step N had run on
another event; machine now retry ...") and the parent never moved on. An event sent from outside
did the same, shown here on the embedded backend: the event record was made with ``retries`` 0
(``handlers/sending.py`` ``sent_event``; ``handlers/children.py`` ``join_record`` likewise), below
the log's latest record (the retry, retries 1). While the cache remembers the machine's progress the
event runs; once it forgot, the step gate asks the log, reads attempt (N, 0) as handled, and the
event was parked. Both records now carry the attempt of the record they answer.
"""

from __future__ import annotations

import sqlite3

import pytest

from eventlog.codec import encode
from eventlog.log import OutRecord
from replay.rebuild import retry_record
from tests.unit.test_waits import CLOCK, RAN, approval, settle

CACHE_TABLES = ("progress", "leases", "flags", "fence")  # the embedded cache's tables (all of them)


@pytest.fixture
def rig(rig_factory):
    RAN.clear()
    r = rig_factory([approval()])
    CLOCK[:] = [r.clock]
    return r


def redispatch(rig, cid: str) -> None:
    """What ``fsmlog replay machine ID --redispatch`` appends: the pending record as a retry."""
    rig.log.append([OutRecord(cid, encode(retry_record(rig.engine.status(cid), rig.clock)))])
    settle(rig)


def test_a_redispatched_wait_takes_an_event_while_the_cache_remembers(rig):
    cid = rig.engine.start("approval")
    settle(rig)
    redispatch(rig, cid)
    rig.engine.send_event(cid, "reject", event_id="e-1")
    settle(rig)
    assert rig.engine.status(cid).state == "rejected" and RAN[(cid, "on_reject")] == 1


def test_a_redispatched_wait_takes_an_event_after_the_cache_forgot(rig, tmp_path):
    cid = rig.engine.start("approval")
    settle(rig)
    redispatch(rig, cid)
    with sqlite3.connect(tmp_path / "engine.db") as db:  # the cache restarted empty
        for table in CACHE_TABLES:
            db.execute(f'DELETE FROM "{table}"')
    rig.engine.send_event(cid, "reject", event_id="e-1")
    settle(rig)
    parked = [letter.reason for letter in rig.services.dead_letters.list()]
    assert rig.engine.status(cid).state == "rejected" and RAN[(cid, "on_reject")] == 1, parked
    assert parked == []


def test_an_event_overtaken_by_a_second_redispatch_is_sent_again_not_parked(rig, tmp_path):
    """The log reads: the wait redispatched (retry 1), the event sent against it (retry 1), the wait
    redispatched again (retry 2) before the event was handled, and the cache forgot the machine. The
    log's latest record is then a later attempt of the same wait, which took no event: the event did
    not lose to anything, so it is sent again at that attempt and applied once (found by the soak)."""
    cid = rig.engine.start("approval")
    settle(rig)
    redispatch(rig, cid)
    sent = rig.engine.send_event(cid, "reject", event_id="e-1")  # appended, not handled yet
    assert sent.record.retries == 1
    rig.log.append([OutRecord(cid, encode(retry_record(rig.engine.status(cid), rig.clock)))])  # retry 2
    with sqlite3.connect(tmp_path / "engine.db") as db:
        for table in CACHE_TABLES:
            db.execute(f'DELETE FROM "{table}"')
    settle(rig)
    assert [letter.reason for letter in rig.services.dead_letters.list()] == []
    assert rig.engine.status(cid).state == "rejected" and RAN[(cid, "on_reject")] == 1
    events = [r for r in rig.records(cid) if r.event_id == "e-1"]
    assert [(r.steps, r.retries) for r in events] == [(sent.record.steps, 1), (sent.record.steps, 2)]
