"""Properties of waiting, under any interleaving of deliveries, redeliveries, timer polls and clock
ticks: a timer fires once and never before it is due; an event sent from outside is applied once
under duplicate sends and redeliveries; a timeout and an event racing resolve to exactly one outcome
(the loser, if it is the event, parked with its reason)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import event as winner
from hypothesis import strategies as st

from eventlog.codec import encode
from eventlog.log import OutRecord
from handlers.errors import EventRefused
from handlers.sending import sent_event
from tests.unit.engine_rig import Rig
from tests.unit.test_waits import CLOCK, RAN, RAN_AT, approval, napper

OPS = st.lists(st.sampled_from(["batch", "redeliver", "due", "tick", "second_engine"]), max_size=25)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class World:
    """One rig, two workers on it, and everything ever appended, so any record can come again."""

    def __init__(self, tmp: str):
        RAN.clear()
        RAN_AT.clear()
        self.rig = Rig(Path(tmp), [approval(), napper()])
        CLOCK[:] = [self.rig.clock]
        self.engines = [self.rig.engine, self.rig.make_engine(worker_id="other", seed=3)]
        self.seen: list = []

    def op(self, name: str, pick: int) -> None:
        rig = self.rig
        if name == "batch":
            batch = rig.next_batch(limit=1 + pick % 3)
            self.seen.extend(batch)
            if batch:
                self.engines[0].handle(batch)
        elif name == "redeliver" and self.seen:
            self.engines[pick % 2].handle([self.seen[pick % len(self.seen)]])
        elif name == "due":
            self.engines[pick % 2].run_due_retries()
        elif name == "tick":
            rig.clock.t += (pick % 7) * 20.0
        elif name == "second_engine":
            batch = rig.next_batch(limit=1)
            self.seen.extend(batch)
            if batch:
                self.engines[1].handle(batch)

    def settle(self) -> None:
        for _ in range(200):
            batch = self.rig.next_batch()
            self.seen.extend(batch)
            if batch:
                self.engines[0].handle(batch)
            elif not self.engines[0].run_due_retries():
                return
        raise AssertionError("did not settle")

    def close(self) -> None:
        self.rig.close()


@FAST
@given(ops=OPS, picks=st.lists(st.integers(0, 1000), min_size=25, max_size=25),
       delay=st.sampled_from([0, 1, 45, 300]))
def test_a_timer_fires_once_and_never_before_it_is_due(ops, picks, delay):
    with tempfile.TemporaryDirectory() as tmp:
        w = World(tmp)
        try:
            cid = w.rig.engine.start("napper", {"nap": delay})
            for name, pick in zip(ops, picks):
                w.op(name, pick)
                if RAN[(cid, "arrive")]:
                    break
            w.settle()
            w.rig.clock.t += 400
            w.settle()
            for rec in list(w.seen):  # every copy again, from either worker
                w.engines[1].handle([rec])
            w.settle()
            due = w.rig.records(cid)[1].due
            assert RAN[(cid, "naps")] == 1
            assert RAN[(cid, "arrive")] == 1
            assert RAN_AT[(cid, "arrive")] >= due
            assert w.rig.engine.status(cid).status == "completed"
        finally:
            w.close()


@FAST
@given(ops=OPS, picks=st.lists(st.integers(0, 1000), min_size=25, max_size=25),
       sends=st.integers(1, 4))
def test_an_event_is_applied_once_under_duplicate_sends_and_redeliveries(ops, picks, sends):
    with tempfile.TemporaryDirectory() as tmp:
        w = World(tmp)
        try:
            cid = w.rig.engine.start("approval")
            w.settle()
            waiting = w.rig.engine.status(cid)
            mdef = w.rig.definitions.machine("approval")
            sent = 0
            for name, pick in zip(ops, picks):
                if sent < sends and pick % 3 == 0:  # the same event id, through the engine or as raw copies
                    if pick % 2:
                        try:
                            w.engines[pick % 2].send_event(cid, "approve", {"by": "ana"}, event_id="form-1")
                        except EventRefused as exc:
                            assert exc.code == "NotWaiting"  # it ran already and the machine moved on
                    else:
                        rec = sent_event(waiting, mdef, cid, "approve", {"by": "ana"}, "form-1",
                                         now=w.rig.clock.t).record
                        w.rig.log.append([OutRecord(cid, encode(rec))])
                    sent += 1
                w.op(name if name != "tick" else "batch", pick)
            if not sent:
                w.rig.engine.send_event(cid, "approve", {"by": "ana"}, event_id="form-1")
            w.settle()
            for rec in list(w.seen):
                w.engines[1].handle([rec])
            w.rig.clock.t += 10_000
            w.settle()
            state = w.rig.engine.status(cid)
            assert RAN[(cid, "on_approve")] == 1 and RAN[(cid, "on_expire")] == 0
            assert (state.status, state.state) == ("completed", "done")
            assert w.rig.services.dead_letters.list(10) == []  # copies of the applied event are no dead letters
        finally:
            w.close()


@FAST
@given(ops=OPS, picks=st.lists(st.integers(0, 1000), min_size=25, max_size=25),
       event=st.sampled_from(["approve", "reject"]))
def test_a_timeout_and_an_event_racing_resolve_to_exactly_one_outcome(ops, picks, event):
    with tempfile.TemporaryDirectory() as tmp:
        w = World(tmp)
        try:
            cid = w.rig.engine.start("approval")
            w.settle()
            waiting = w.rig.engine.status(cid)
            w.rig.clock.t = waiting.waiting_until  # the timeout is due as the event is sent
            rec = sent_event(waiting, w.rig.definitions.machine("approval"), cid, event, None, "ev-1",
                             now=w.rig.clock.t).record
            appended = False
            for name, pick in zip(ops, picks):
                if not appended and pick % 4 == 0:
                    w.rig.log.append([OutRecord(cid, encode(rec))])
                    appended = True
                w.op(name, pick)
            if not appended:
                w.rig.log.append([OutRecord(cid, encode(rec))])
            w.settle()
            w.rig.clock.t += 10_000
            w.settle()
            for copy in list(w.seen):
                w.engines[len(copy.data) % 2].handle([copy])
            w.settle()
            outcomes = {name: RAN[(cid, f"on_{name}")] for name in ("approve", "reject", "expire")}
            assert sorted(outcomes.values()) == [0, 0, 1], outcomes
            winner("timeout won" if outcomes["expire"] else "event won")
            state = w.rig.engine.status(cid)
            parked = w.rig.services.dead_letters.list(10)
            if outcomes["expire"]:
                assert state.state == "expired"
                assert len(parked) == 1 and "ev-1" in parked[0].reason
            else:
                assert state.state in ("done", "rejected") and parked == []
        finally:
            w.close()
