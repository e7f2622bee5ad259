"""Waiting under faults (tests/unit/faults_rig.py: two sides of every source, per-worker reach that
flaps, caches that forget): a timeout and an event sent from outside, racing, leave exactly one
outcome in the union of both logs, and the machine ends; a timer never runs its step early."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import event as winner
from hypothesis import strategies as st

from eventlog.codec import encode
from eventlog.errors import BackendError
from eventlog.log import OutRecord
from eventlog.settings import SOURCES
from handlers.sending import sent_event
from tests.unit.faults_rig import PRIMARY, SIDES, FaultRig
from tests.unit.test_waits import CLOCK, approval, napper

OP = st.tuples(st.sampled_from(["deliver", "due", "cut", "restore", "forget", "tick", "send"]),
               st.integers(0, 1), st.sampled_from(SOURCES), st.sampled_from(SIDES))


def drain(rig: FaultRig, workers: list, rounds: int = 60, *, wait: bool = True) -> None:
    """Every side reachable again: deliver everything and run what is due until nothing moves (and,
    with ``wait``, letting time pass until no timer is left)."""
    for w in workers:
        w.restore()
    for _ in range(rounds):
        moved = 0
        for w in workers:
            result = w.handle(rig.all_records())
            moved += result.handled
            try:
                moved += w.engine.run_due_retries()
            except BackendError:
                pass
        if not moved and not (wait and rig.pending_retries()):
            return
        if wait:
            rig.clock.t += 120


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OP, max_size=30), event=st.sampled_from(["approve", "reject"]))
def test_a_timeout_racing_an_event_under_faults_has_exactly_one_outcome(ops, event):
    with tempfile.TemporaryDirectory() as tmp:
        rig = FaultRig(Path(tmp), [approval(), napper()])
        CLOCK[:] = [rig.clock]
        workers = [rig.worker("w0", 1), rig.worker("w1", 2)]
        try:
            cid = workers[0].engine.start("approval")
            drain(rig, workers, wait=False)
            waiting = rig.fold(cid)
            assert waiting.waiting_until is not None
            rig.clock.t = waiting.waiting_until
            record = sent_event(waiting, rig.definitions.machine("approval"), cid, event, None, "ev-1",
                                now=rig.clock.t).record
            sent = False
            for name, who, kind, side in ops:
                w = workers[who]
                if name == "deliver":
                    try:
                        w.handle(rig.read(side))
                    except BackendError:
                        pass
                elif name == "due":
                    try:
                        w.engine.run_due_retries()
                    except BackendError:
                        pass
                elif name == "cut":
                    w.cut(kind, side)
                elif name == "restore":
                    w.restore(kind, side)
                elif name == "forget":
                    rig.forget_cache(side, cid)
                elif name == "tick":
                    rig.clock.t += 30
                elif name == "send" and not sent:
                    rig.log(side).append([OutRecord(cid, encode(record))])
                    sent = True
            if not sent:
                rig.log(PRIMARY).append([OutRecord(cid, encode(record))])
            drain(rig, workers)
            final = rig.fold(cid)
            assert final.terminal and final.status == "completed", final.last.describe()
            branches = {e.state for e in rig.events(cid)} & {"ship", "done", "rejected", "expired"}
            winners = {"approve": {"ship", "done"}, "reject": {"rejected"}, "expire": {"expired"}}
            assert sum(1 for states in winners.values() if branches & states) == 1, branches
            assert final.state in ("done", "rejected", "expired")
            winner("timeout won" if final.state == "expired" else "event won")
        finally:
            for w in workers:
                w.close()
            rig.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OP, max_size=30))
def test_a_timer_never_runs_early_under_faults(ops):
    with tempfile.TemporaryDirectory() as tmp:
        rig = FaultRig(Path(tmp), [approval(), napper()])
        CLOCK[:] = [rig.clock]
        workers = [rig.worker("w0", 1), rig.worker("w1", 2)]
        try:
            cid = workers[0].engine.start("napper", {"nap": 300})
            for name, who, kind, side in ops:
                w = workers[who]
                try:
                    if name == "deliver":
                        w.handle(rig.read(side))
                    elif name == "due":
                        w.engine.run_due_retries()
                except BackendError:
                    pass
                if name == "cut":
                    w.cut(kind, side)
                elif name == "restore":
                    w.restore(kind, side)
                elif name == "forget":
                    rig.forget_cache(side, cid)
                elif name == "tick":
                    rig.clock.t += 30
                waits = [e for e in rig.events(cid) if e.due is not None]
                if waits:
                    assert not any(e.state == "b" for e in rig.events(cid)) or rig.clock.t >= waits[0].due
            drain(rig, workers)
            ended = [e for e in rig.events(cid) if e.terminal]
            due = min(e.due for e in rig.events(cid) if e.due is not None)
            assert ended and all(e.state == "b" and e.time >= due for e in ended)
        finally:
            for w in workers:
                w.close()
            rig.close()
