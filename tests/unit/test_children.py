"""Child machines: an action starts them (obj["children"].start), the parent waits in a
``wait: children`` state and receives ``children_done`` once every child ended, with each child's
id, status, state and final context under context["children"]; exactly once, whatever order the
children end in and however often their records are delivered."""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.errors import EventRefused
from tests.unit.engine_rig import Rig

HERE = __name__
JOINED: Counter = Counter()


def split(context, obj):
    obj["children"].start("item", [{"price": p} for p in context["prices"]])
    return "started"


def charge(context, obj):
    if context["price"] < 0:
        raise ValueError("a negative price")
    context["charged"] = context["price"]
    return "ok"


def joined(context, obj):
    JOINED[context.correlation_id] += 1
    context["total"] = sum(c["context"].get("charged", 0) for c in context["children"])


def machines() -> list[dict]:
    return [
        {"name": "basket", "states": [
            {"name": "split", "initial": True, "do_action": f"{HERE}.split",
             "transitions": [{"event": "started", "target": "joining"}]},
            {"name": "joining", "wait": "children",
             "transitions": [{"event": "children_done", "target": "summed", "action": f"{HERE}.joined"}]},
            {"name": "summed", "final": True},
        ]},
        {"name": "item", "max_retries": 0, "states": [
            {"name": "charging", "initial": True, "do_action": f"{HERE}.charge",
             "transitions": [{"event": "ok", "target": "charged"}]},
            {"name": "charged", "final": True},
        ]},
    ]


def drive_shuffled(rig: Rig, seed: int, extra_copies: int) -> None:
    """Deliver every record, one at a time, in a random order, some more than once, until nothing is new."""
    rnd = random.Random(seed)
    pool: list = []
    for _ in range(500):
        pool.extend(rig.next_batch())
        if not pool:
            return
        rnd.shuffle(pool)
        rec = pool.pop()
        if extra_copies and rnd.random() < 0.3:
            pool.append(rec)
            extra_copies -= 1
        rig.engine.handle([rec])
    raise AssertionError("did not settle")


@pytest.fixture
def rig(rig_factory):
    JOINED.clear()
    return rig_factory(machines())


def test_the_parent_gets_every_childs_outcome_once(rig):
    cid = rig.engine.start("basket", {"prices": [3, 4, -1]})
    rig.drive()
    state = rig.engine.status(cid)
    assert (state.status, state.state, state.context["total"]) == ("completed", "summed", 7)
    kids = state.context["children"]
    assert [k["id"] for k in kids] == [f"{cid}:0.{i}" for i in range(3)]
    assert [k["status"] for k in kids] == ["completed", "completed", "failed"]
    assert kids[2]["error"].startswith("ValueError") and kids[0]["context"] == {"price": 3, "charged": 3}
    assert rig.records(kids[0]["id"])[0].parent == cid
    assert JOINED[cid] == 1


def test_a_parent_with_no_children_joins_at_once(rig):
    cid = rig.engine.start("basket", {"prices": []})
    rig.drive()
    assert rig.engine.status(cid).state == "summed" and JOINED[cid] == 1


def test_an_aborted_child_ends_the_wait_and_events_from_outside_are_refused(rig):
    cid = rig.engine.start("basket", {"prices": [1, 2]})
    rig.engine.handle(rig.next_batch())  # the split: two children started
    rig.engine.handle(rig.next_batch(limit=1))  # the parent waits
    with pytest.raises(EventRefused) as info:
        rig.engine.send_event(cid, "children_done")
    assert info.value.code == "NotWaiting" and info.value.state == "joining"
    first, second = rig.engine.status(cid).context["children"]
    rig.engine.abort(first, "not needed")
    rig.drive()
    outcome = {k["id"]: k["status"] for k in rig.engine.status(cid).context["children"]}
    assert outcome == {first: "aborted", second: "completed"} and JOINED[cid] == 1


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prices=st.lists(st.integers(-2, 9), max_size=5), seed=st.integers(0, 10**6), copies=st.integers(0, 8))
def test_children_join_exactly_once_in_any_order_with_duplicates(prices, seed, copies):
    JOINED.clear()
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp), machines())
        try:
            cid = rig.engine.start("basket", {"prices": prices})
            drive_shuffled(rig, seed, copies)
            rig.drive()
            state = rig.engine.status(cid)
            assert (state.status, state.state) == ("completed", "summed")
            assert JOINED[cid] == 1
            assert state.context["total"] == sum(p for p in prices if p >= 0)
            assert len(state.context["children"]) == len(prices)
        finally:
            rig.close()


def test_history_names_the_parent_and_the_children(rig):
    from fsmlog.cli.machines import family_lines

    cid = rig.engine.start("basket", {"prices": [5, -1]})
    rig.drive()
    kids = rig.engine.status(cid).context["children"]
    assert family_lines(rig.engine.status(cid).last) == [
        f"children (2): {kids[0]['id']} (completed), {kids[1]['id']} (failed)"]
    assert family_lines(rig.engine.status(kids[0]["id"]).last) == [f"parent: {cid}"]


def test_a_join_that_could_not_read_the_log_happens_when_the_wait_is_delivered_again(rig):
    from eventlog.errors import BackendError

    cid = rig.engine.start("basket", {"prices": [2]})
    real = rig.engine.authority.state
    rig.engine.authority.state = lambda c: (_ for _ in ()).throw(BackendError("log unreadable"))
    try:
        rig.drive()  # the child ends; its join cannot read the log
    finally:
        rig.engine.authority.state = real
    assert rig.engine.status(cid).state == "joining" and JOINED[cid] == 0
    assert rig.records(cid)[-1].state == "joining" and rig.records(cid)[-1].event is None
    from replay.rebuild import retry_record

    again = retry_record(rig.engine.status(cid), rig.clock)  # what `replay scan --redispatch` appends
    from eventlog.codec import encode
    from eventlog.log import OutRecord

    rig.log.append([OutRecord(cid, encode(again))])
    rig.drive()
    assert rig.engine.status(cid).state == "summed" and JOINED[cid] == 1
    assert rig.records(cid)[2].state == "joining"  # the wait's entry ran once: no second wait record


def test_a_join_whose_reads_fail_a_few_times_still_happens_by_itself(rig):
    """Sources that flap: the join is tried again, so the parent needs no operator to move on."""
    from eventlog.errors import ServiceUnavailable

    cid = rig.engine.start("basket", {"prices": [2, 3]})
    real = rig.engine.authority.state
    failures = {"left": 3}
    naps: list[float] = []

    def flaky(c):
        if failures["left"]:
            failures["left"] -= 1
            raise ServiceUnavailable("log unreadable for a moment")
        return real(c)

    rig.engine.authority.state = flaky
    rig.engine.sleep = naps.append
    try:
        rig.drive()
    finally:
        rig.engine.authority.state = real
    assert failures["left"] == 0 and len(naps) == 3  # three failed tries, each followed by a pause
    assert rig.engine.status(cid).state == "summed" and JOINED[cid] == 1
