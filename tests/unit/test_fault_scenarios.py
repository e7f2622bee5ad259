"""One deterministic regression test per fault scenario (docs/GUARANTEES.md), on the embedded backend.

Every source has a primary and a secondary SQLite file; each worker has its own failover proxies and
its own reach of every side (``tests.unit.faults_rig``); one injected clock.

1. Cache failover: a completed step redelivered to a worker that cannot reach cache A (and uses B)
   does not run again, and B's tokens stay above A's.
2. Stream failover: a next record on the secondary stream is seen by ``status`` and handled when the
   secondary's trigger delivers it.
3. Retry failover: a retry scheduled on the secondary runs once the primary is back; after a failure
   behind a ``local`` transition whose retry was lost, replay's redispatch runs the failed step.
4. An action longer than the lease: a second worker takes the expired lease and runs the step; the
   first holder's outcome is not appended.
5. A cache that forgets (flushed, or the machine evicted) after steps completed: redelivered steps are
   skipped and the next token is still greater.
6. Lambda: an unset PRIMARY_CACHE_SOURCE is a ``SettingsError`` naming it.
7. Replay blind spots: a machine only the checkpoint store shows running is listed by ``scan``; scan
   and rebuild fold both streams.
"""

from __future__ import annotations

from collections import Counter

import pytest

from eventlog.codec import decode
from eventlog.errors import SettingsError
from eventlog.event import COMPLETED, STEP
from eventlog.settings import SOURCES, load_settings
from handlers.wiring import open_services
from handlers.worker import Worker
from replay.rebuild import rebuild, redispatch
from replay.scan import scan
from tests.unit.faults_rig import PRIMARY, SECONDARY, SIDES, FaultRig

HERE = __name__
MACHINE = "line"
LEASE = 60.0

RAN: Counter = Counter()  # (cid, steps) -> how many times the step's do action returned
CALLS: list[tuple[str, int, int, str, int]] = []  # (cid, steps, retries, worker, fence token) per do action
FAILURES: Counter = Counter()  # cid -> how many times the flaky action raised
HOOKS: dict[tuple[str, int], object] = {}  # (cid, steps) -> called once, inside that step's do action


@pytest.fixture(autouse=True)
def _fresh():
    for box in (RAN, FAILURES, HOOKS):
        box.clear()
    CALLS.clear()
    yield
    for box in (RAN, FAILURES, HOOKS):
        box.clear()
    CALLS.clear()


def _do(context, obj) -> None:
    cid, steps = context.correlation_id, context.steps
    CALLS.append((cid, steps, context.retries, obj["lease_owner"], obj["fence_token"]))
    hook = HOOKS.pop((cid, steps), None)
    if hook is not None:
        hook()
    context["by"] = obj["lease_owner"]  # which worker's outcome a record is


def work(context, obj):
    _do(context, obj)
    RAN[(context.correlation_id, context.steps)] += 1
    return "next"


def flaky(context, obj):
    """Raises for the machine's first ``fail_times`` executions."""
    _do(context, obj)
    if FAILURES[context.correlation_id] < context.get("fail_times", 0):
        FAILURES[context.correlation_id] += 1
        raise RuntimeError("gateway down")
    RAN[(context.correlation_id, context.steps)] += 1
    return "next"


def finish(context, obj):
    _do(context, obj)
    RAN[(context.correlation_id, context.steps)] += 1


def line(n_steps: int = 4, *, local_at: int | None = None, flaky_at: int | None = None, max_retries: int = 2) -> dict:
    """States s0..s{n-1} then ``end``: record ``steps`` k runs s_k's do (entering ``end`` at k = n)."""
    names = [f"s{i}" for i in range(n_steps)] + ["end"]
    states = []
    for i in range(n_steps):
        tr = {"event": "next", "target": names[i + 1]}
        if i == local_at:
            tr["local"] = True
        states.append({"name": names[i], "initial": i == 0,
                       "do_action": f"{HERE}.{'flaky' if i == flaky_at else 'work'}", "transitions": [tr]})
    states.append({"name": "end", "final": True, "entry_action": f"{HERE}.finish"})
    return {"name": MACHINE, "max_retries": max_retries, "states": states}


@pytest.fixture
def make_rig(tmp_path):
    made = []

    def make(machine: dict, **settings) -> FaultRig:
        values = dict(RETRY_BASE_SECONDS=1.0, RETRY_CAP_SECONDS=8.0, LEASE_SECONDS=LEASE, LEASE_WAIT_SECONDS=5.0,
                      SNAPSHOT_EVERY=1)
        values.update(settings)
        rig = FaultRig(tmp_path / f"rig{len(made)}", [machine], **values)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


# ---------------------------------------------------------------- helpers


def deliver(rig: FaultRig, worker, records, tries: int = 6) -> None:
    """Deliver ``records`` (all from one side) as its trigger would: items handed back come again,
    a little later (past a cache's failover delay or a backoff)."""
    pending = list(records)
    for _ in range(tries):
        result = worker.handle(pending)
        assert result.parked == 0, result
        failed = set(result.failed_item_ids)
        if not failed:
            return
        pending = [(side, rec) for side, rec in pending if rec.position in failed]
        rig.clock.t += 2.0
    raise AssertionError(f"{worker.name} kept handing back {[(s, r.position) for s, r in pending]}")


def record_at(rig: FaultRig, cid: str, steps: int, retries: int = 0):
    """The (side, record) of ``cid`` at ``steps``/``retries`` that a worker would run (not terminal)."""
    found = [(side, rec) for side, rec in rig.records_of(cid)
             if (e := decode(rec.data)).steps == steps and e.retries == retries and not e.terminal]
    assert found, f"no record of {cid} at step {steps} retry {retries}: {describe(rig, cid)}"
    return found[0]


def describe(rig: FaultRig, cid: str) -> list[tuple[str, str, int, int]]:
    return [(side, (e := decode(rec.data)).kind, e.steps, e.retries) for side, rec in rig.records_of(cid)]


def tokens(cid: str, steps: int | None = None, worker: str | None = None) -> list[int]:
    return [t for c, s, _, w, t in CALLS if c == cid and (steps is None or s == steps) and (worker is None or w == worker)]


def drive(rig: FaultRig, workers, cids, observer=None, redispatches: int = 0) -> None:
    """Deliver both logs again and again (one record a batch), moving due retries; when nothing moves,
    redispatch (up to ``redispatches`` rounds) what is still running, as ``fsmlog replay`` would."""
    quiet = 0
    for round_ in range(60):
        worker = workers[round_ % len(workers)]
        before = rig.all_records()
        for record in before:
            worker.handle([record])
        rig.clock.t += 10.0 if quiet == 0 else LEASE + 1
        moved = worker.engine.run_due_retries()
        if moved or len(rig.all_records()) != len(before):
            quiet = 0
            continue
        quiet += 1
        running = [cid for cid in cids if not rig.fold(cid).terminal]
        if not running:
            return
        if quiet >= 3:
            if redispatches <= 0:
                return
            redispatches -= 1
            for cid in running:
                redispatch(rebuild(cid, observer.services), observer.services, rig.clock)


# ---------------------------------------------------------------- 1. cache failover


def test_cache_failover_does_not_rerun_a_completed_step_and_tokens_stay_above_the_primarys(make_rig):
    rig = make_rig(line(4))
    w1, w2 = rig.worker("w1", 1), rig.worker("w2", 2)
    cid = w1.engine.start(MACHINE, {}, correlation_id="m")
    deliver(rig, w1, [record_at(rig, cid, 0)])  # step 0 on cache A
    step1 = record_at(rig, cid, 1)
    deliver(rig, w1, [step1])  # step 1 on cache A
    assert RAN[(cid, 0)] == RAN[(cid, 1)] == 1
    issued_by_a = max(tokens(cid))

    w2.cut("CACHE", PRIMARY)  # w2 cannot reach A: it uses B, which never saw the machine
    deliver(rig, w2, [step1])  # a redelivery of the completed step 1
    assert RAN[(cid, 1)] == 1, f"step 1 ran again on the secondary cache; calls: {CALLS}"

    deliver(rig, w2, [record_at(rig, cid, 2)])  # step 2, under B's lease
    assert RAN[(cid, 2)] == 1, CALLS
    (on_b,) = tokens(cid, 2)
    assert on_b > issued_by_a, f"B issued token {on_b} for step 2 after A issued {issued_by_a} for steps 0-1"

    deliver(rig, w1, [record_at(rig, cid, 3)])  # step 3, back on A
    (on_a,) = tokens(cid, 3)
    assert on_a > on_b, f"A issued token {on_a} for step 3 after B issued {on_b} for step 2"


# ---------------------------------------------------------------- 2. stream failover


def test_a_next_record_on_the_secondary_stream_is_seen_by_status_and_handled(make_rig):
    rig = make_rig(line(3), SNAPSHOT_EVERY=10)  # no snapshot to lean on: status must read both streams
    w1, w2 = rig.worker("w1", 1), rig.worker("w2", 2)
    cid = w1.engine.start(MACHINE, {}, correlation_id="m")
    deliver(rig, w1, [record_at(rig, cid, 0)])
    w1.cut("STREAM", PRIMARY)  # step 1's next record can only go to the secondary stream
    deliver(rig, w1, [record_at(rig, cid, 1)])
    side, _ = record_at(rig, cid, 2)
    assert side == SECONDARY, f"setup: step 2's record should be on the secondary stream: {describe(rig, cid)}"
    w1.restore()

    whole = rig.fold(cid)
    for w in (w1, w2):
        got = w.engine.status(cid)
        assert got is not None and got.last == whole.last, (
            f"{w.name}'s status says {got and got.last.describe()}, the fold of both streams "
            f"{whole.last.describe()}")

    # the local worker (what `fsmlog worker` runs) on w2's services: it must consume both streams
    local = Worker(w2.engine, w2.services.log, consumer="scenario", monotonic=rig.clock, sleep=rig.clock.sleep)
    for _ in range(20):
        if local.run_once() is None:
            break
    assert RAN[(cid, 2)] == 1, f"the record on the secondary stream was not handled: {describe(rig, cid)}"
    assert rig.fold(cid).status == "completed", describe(rig, cid)
    assert all(RAN[(cid, k)] == 1 for k in range(4)), RAN


# ---------------------------------------------------------------- 3. retry failover


def test_a_retry_scheduled_on_the_secondary_runs_after_the_primary_recovers(make_rig):
    rig = make_rig(line(3, flaky_at=0, max_retries=2))
    w1, w2 = rig.worker("w1", 1), rig.worker("w2", 2)
    cid = w1.engine.start(MACHINE, {"fail_times": 1}, correlation_id="m")
    w1.cut("RETRY", PRIMARY)
    deliver(rig, w1, [record_at(rig, cid, 0)])  # step 0 fails: its retry goes to the secondary
    assert FAILURES[cid] == 1
    assert rig.raw[SECONDARY]["RETRY"].pending() == 1, "setup: the retry should wait on the secondary"
    w1.restore()

    rig.clock.t += 3600
    moved = w2.engine.run_due_retries()  # a timer that never saw the primary fail
    assert moved == 1, "the retry waiting on the secondary was not moved once the primary answered again"
    deliver(rig, w2, [record_at(rig, cid, 0, retries=1)])
    assert RAN[(cid, 0)] == 1, CALLS
    assert sum(rig.raw[side]["RETRY"].pending() for side in SIDES) == 0


def test_redispatch_after_a_local_step_failed_and_its_retry_was_lost_runs_the_failed_step(make_rig):
    rig = make_rig(line(3, local_at=0, flaky_at=1, max_retries=3))
    w1, observer = rig.worker("w1", 1), rig.worker("observer", 9)
    cid = w1.engine.start(MACHINE, {"fail_times": 1}, correlation_id="m")
    deliver(rig, w1, [record_at(rig, cid, 0)])  # step 0 runs, then step 1 (local) fails: its retry is (1, 1)
    assert RAN[(cid, 0)] == 1 and FAILURES[cid] == 1
    for side in SIDES:  # a retry waiting in the retry store is lost
        rig.raw[side]["RETRY"].db.execute("DELETE FROM retries")
    step0_completed = rig.fold(cid).steps > 0  # whether step 0's successor reached the log
    redispatch(rebuild(cid, observer.services), observer.services, rig.clock)  # the operator's `replay --redispatch`

    drive(rig, [w1], [cid], observer=observer, redispatches=3)
    assert RAN[(cid, 1)] == 1, (
        f"the failed step 1 never ran again after replay's redispatch: {describe(rig, cid)}; calls {CALLS}")
    assert rig.fold(cid).status == "completed", describe(rig, cid)
    if step0_completed:
        assert RAN[(cid, 0)] == 1, f"step 0 ran again although the log held its successor: {CALLS}"


# ---------------------------------------------------------------- 4. an action longer than the lease


def test_a_holder_whose_lease_expired_under_a_slow_action_does_not_append(make_rig):
    rig = make_rig(line(3))
    w1, w2 = rig.worker("w1", 1), rig.worker("w2", 2)
    cid = w1.engine.start(MACHINE, {}, correlation_id="m")
    deliver(rig, w1, [record_at(rig, cid, 0)])
    step1 = record_at(rig, cid, 1)

    def meanwhile():  # the action outlasts the lease; another worker gets the same record
        rig.clock.t += LEASE + 1
        w2.handle([step1])

    HOOKS[(cid, 1)] = meanwhile
    w1.handle([step1])

    assert tokens(cid, 1, "w2"), f"the second worker did not run the step under the expired lease: {CALLS}"
    assert max(tokens(cid, 1, "w2")) > max(tokens(cid, 1, "w1"))
    nexts = [decode(rec.data) for _, rec in rig.records_of(cid)]
    nexts = [e for e in nexts if e.steps == 2 and e.kind in (STEP, COMPLETED)]
    assert len(nexts) == 1, f"step 1's outcome was appended {len(nexts)} times: {[e.context for e in nexts]}"
    assert nexts[0].context["by"] == "w2", "the holder that lost its lease appended its outcome"


# ---------------------------------------------------------------- 5. caches that forget


@pytest.mark.parametrize("forget", ["flushed", "evicted"])
def test_a_cache_that_forgets_does_not_rerun_completed_steps_and_tokens_still_rise(make_rig, forget):
    rig = make_rig(line(4))
    w1 = rig.worker("w1", 1)
    cid = w1.engine.start(MACHINE, {}, correlation_id="m")
    start = record_at(rig, cid, 0)
    deliver(rig, w1, [start])
    step1 = record_at(rig, cid, 1)
    deliver(rig, w1, [step1])
    issued = max(tokens(cid))

    for side in SIDES:  # both sides forget: the progress, lease and fence rows are gone
        rig.forget_cache(side, None if forget == "flushed" else cid)

    deliver(rig, w1, [start])
    deliver(rig, w1, [step1])
    assert RAN[(cid, 0)] == 1 and RAN[(cid, 1)] == 1, f"a completed step ran again after the cache {forget}: {CALLS}"
    deliver(rig, w1, [record_at(rig, cid, 2)])
    assert RAN[(cid, 2)] == 1
    (after,) = tokens(cid, 2)
    assert after > issued, f"token {after} after the cache {forget}, not above {issued} issued before"


# ---------------------------------------------------------------- 6. Lambda


def test_an_unset_primary_cache_source_on_lambda_is_a_settings_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "fsmlog-test")
    env = {"AWS_LAMBDA_FUNCTION_NAME": "fsmlog-test"}
    env.update({f"PRIMARY_{kind}_SOURCE": f"sqlite:///{tmp_path}/explicit.db" for kind in SOURCES if kind != "CACHE"})
    with pytest.raises(SettingsError, match="PRIMARY_CACHE_SOURCE"):
        services = open_services(load_settings(environ=env))
        services.close()


# ---------------------------------------------------------------- 7. replay blind spots


@pytest.mark.parametrize("snapshot_side", SIDES)
def test_replay_scan_lists_a_machine_only_the_checkpoint_store_shows_running(make_rig, snapshot_side):
    rig = make_rig(line(3))
    w1, observer = rig.worker("w1", 1), rig.worker("observer", 9)
    cid = w1.engine.start(MACHINE, {}, correlation_id="m")
    if snapshot_side == SECONDARY:
        w1.cut("CHECKPOINT", PRIMARY)
    deliver(rig, w1, [record_at(rig, cid, 0)])  # snapshot of the running machine at step 1
    assert rig.raw[snapshot_side]["CHECKPOINT"].load(cid) is not None, "setup: no snapshot on that side"
    for side in SIDES:  # its records have left the stream (retention)
        rig.log(side).db.execute("DELETE FROM log WHERE key = ?", (cid,))

    result = scan(observer.services.log, observer.services.checkpoints, now=rig.clock() + 3600,
                  stalled_after_s=600)
    assert cid in result.states and result.states[cid].status == "running", (
        f"the machine only the {snapshot_side} checkpoint store shows running is not listed: {list(result.states)}")
    assert cid in [s.correlation_id for s in result.stalled], "it is not listed as stalled"


def test_replay_scan_and_rebuild_fold_both_streams(make_rig):
    rig = make_rig(line(3))
    w1, observer = rig.worker("w1", 1), rig.worker("observer", 9)
    cid = w1.engine.start(MACHINE, {}, correlation_id="m")
    deliver(rig, w1, [record_at(rig, cid, 0)])
    w1.cut("STREAM", PRIMARY)
    deliver(rig, w1, [record_at(rig, cid, 1)])
    assert record_at(rig, cid, 2)[0] == SECONDARY, f"setup: {describe(rig, cid)}"
    rig.forget_checkpoints(PRIMARY)
    rig.forget_checkpoints(SECONDARY)
    whole = rig.fold(cid)

    rebuilt = rebuild(cid, observer.services)
    assert rebuilt.rebuilt_state.last == whole.last, "rebuild did not fold the secondary stream"
    result = scan(observer.services.log, observer.services.checkpoints, now=rig.clock() + 3600, stalled_after_s=600)
    assert result.states[cid].last == whole.last, "scan did not fold the secondary stream"
