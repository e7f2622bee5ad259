"""A stateful model of the engine under faults, over both sides of every source (docs/GUARANTEES.md).

Every source has a primary and a secondary SQLite file. Two workers, each with its own failover
proxies and its own reach of every side (``tests.unit.faults_rig``), and an observer that reaches
everything (it reads status and runs replay). Hypothesis, in any interleaving:

- starts machines and delivers records from BOTH logs (any subset, any order, duplicates; or a
  trigger's in-order reading of one side) to either worker, moves due retries, redispatches a
  running machine the way ``fsmlog replay`` does;
- flaps reachability per worker, source kind and side (never both sides of one source at once for
  one worker);
- makes stores forget: a cache side emptied (a flush, a restart), one machine's cache rows evicted,
  checkpoints dropped on a side;
- jumps the clock past the lease, and runs slow actions: a do action that advances the clock
  (beyond the lease, or not) and meanwhile has the other worker handle a copy of the same record,
  the interleaving of two workers on one step.

After every rule:

- no completed step runs again: a do action never starts once its step's successor is in either log;
- one holder at a time: two workers never run one machine at once while they use the same cache
  side, unless the first one's lease had expired (nothing renewed it for ``LEASE_SECONDS``);
- a holder whose lease was taken over on its own cache side does not append the step's outcome;
- fence tokens rise: an execution of a later attempt gets a greater token than every earlier
  execution of the machine, whichever sides answered and whatever the caches forgot; a
  re-execution of an attempt on the same cache side (which did not forget) gets a greater token;
- the fold of the union of both logs equals ``engine.status`` (for the observer, and for each
  worker that reaches both streams).

At teardown every side is reachable again; both logs are delivered again and again, due retries
are moved (from both retry sides), and machines still running are redispatched by replay: every
machine must have ended (completed, or failed at its flaky step when its failures outran its
retries or a redispatch spent them).

What the model found is kept at the end of the file as scripts (``replay``): the rules of a
shrunk failing example, run in order through the same model and checks.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context, event
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from eventlog.codec import decode
from eventlog.event import COMPLETED, STEP
from eventlog.settings import SOURCES
from replay.rebuild import rebuild, redispatch
from tests.unit.faults_rig import PRIMARY, SECONDARY, SIDES, FaultRig

HERE = __name__
MACHINE = "faults"
LEASE = 60.0
LEASE_WAIT = 5.0
RETRY_CAP = 8.0  # seconds; advancing the clock by more than this makes every scheduled retry due
EXEC_KEY = "_model_execution"
CONTEXT_KEY = "_exec"  # in the user context: the execution whose actions built the record


@dataclass
class Execution:
    """One run of the engine over one record (and its local chain): one ``obj`` handed to the actions."""

    id: int
    cid: str
    worker: str
    token: int
    first: tuple[int, int]  # (steps, retries) of its first attempt
    last: tuple[int, int]  # of the latest attempt it ran (local steps)
    side: str  # the cache side its worker uses (the primary whenever it reaches it)
    epoch: int  # how many times that side forgot this machine before the execution began
    last_seen: float  # clock when its latest action began
    seen_steps: int  # the most steps of any record of the machine in either log when it began
    depth: int = 0  # actions of it on the stack right now
    lost_to: int | None = None  # the execution that took its lease over on the same side


MODEL: FaultsModel | None = None  # the running example, for the actions
EXECUTIONS: dict[int, Execution] = {}
BY_CID: dict[str, list[Execution]] = defaultdict(list)
FAILURES: Counter = Counter()  # cid -> how many times the flaky action raised
VIOLATIONS: list[str] = []
PLAN: dict | None = None  # the next slow action


def _note(text: str) -> None:
    """A hypothesis statistics event (``--hypothesis-show-statistics``); nothing outside a test run."""
    if currently_in_test_context():
        event(text)


def _show(ev) -> str:
    if ev is None:
        return "None"
    return f"{ev.describe()} (built by execution {ev.context.get(CONTEXT_KEY)}, time {ev.time:.2f})"


def _reset() -> None:
    global MODEL, PLAN
    MODEL, PLAN = None, None
    EXECUTIONS.clear()
    BY_CID.clear()
    FAILURES.clear()
    VIOLATIONS.clear()


def _begin(m: FaultsModel, context, obj) -> Execution:
    """The first action of an execution: check it against every earlier execution of the machine."""
    cid, now = context.correlation_id, m.rig.clock()
    worker, token = obj["lease_owner"], obj["fence_token"]
    side = PRIMARY if m.reaches(worker, "CACHE", PRIMARY) else SECONDARY
    at = (context.steps, context.retries)
    seen = max((e.steps for e in m.rig.events(cid)), default=0)
    ex = Execution(len(EXECUTIONS) + 1, cid, worker, token, at, at, side, m.epoch[(side, cid)], now, seen)
    for other in BY_CID[cid]:
        if other.depth > 0 and other.worker != worker:
            if other.side == side and now - other.last_seen < LEASE:
                VIOLATIONS.append(
                    f"{cid}: two holders at once on the {side} cache: {worker} began attempt {at} (token {token}) "
                    f"while {other.worker} ran {other.last} (token {other.token}) "
                    f"{now - other.last_seen:.0f}s after its last action, within the {LEASE:.0f}s lease")
            if other.side == side:
                other.lost_to = ex.id
            _note(f"overlap: {'lease taken over' if other.side == side else 'partition between cache sides'}")
        if at > other.last:
            if token <= other.token:
                VIOLATIONS.append(
                    f"{cid}: fence token went down: attempt {at} got {token} on the {side} cache ({worker}), "
                    f"after attempt {other.last} got {other.token} on the {other.side} cache ({other.worker})")
        elif side == other.side and ex.epoch == other.epoch and token <= other.token:
            VIOLATIONS.append(
                f"{cid}: re-execution of attempt {at} on the {side} cache got token {token}, not above "
                f"{other.token} of the earlier execution of {other.first}..{other.last} on that side")
    _note(f"execution on the {side} cache")
    EXECUTIONS[ex.id] = ex
    BY_CID[cid].append(ex)
    obj[EXEC_KEY] = ex.id
    return ex


@contextmanager
def _acting(context, obj):
    m = MODEL
    ex = EXECUTIONS.get(obj.get(EXEC_KEY, -1)) or _begin(m, context, obj)
    ex.last = max(ex.last, (context.steps, context.retries))
    ex.last_seen = m.rig.clock()
    context[CONTEXT_KEY] = ex.id
    ex.depth += 1
    try:
        yield ex
    finally:
        ex.depth -= 1


def _step_ran(ex: Execution, context) -> None:
    """A step's work begins (its do action, or entering the final state): it must not have completed.

    Completed means its successor (any record with more steps) is in either log. An execution that
    began before that may still be running it (a partition lets two holders overlap); but one that
    began after it, or whose lease was taken over on its own cache side (its local chain must stop),
    runs a completed step again."""
    m = MODEL
    steps = context.steps
    later = [(e.kind, e.steps, e.retries) for e in m.rig.events(ex.cid) if e.steps > steps]
    if later and (ex.seen_steps > steps or ex.lost_to is not None) and ex.cid not in m.sole_marks_lost:
        why = ("its execution began after that" if ex.seen_steps > steps else
               f"its lease was taken over by execution {ex.lost_to} on the {ex.side} cache")
        VIOLATIONS.append(f"{ex.cid}: step {steps} ran again ({ex.worker}, execution of {ex.first}, token {ex.token}) "
                          f"although its successor is in the log ({later[:3]}) and {why}")


def _maybe_slow(ex: Execution) -> None:
    global PLAN
    plan = PLAN
    if plan is None or plan["worker"] != ex.worker or plan["cid"] != ex.cid:
        return
    PLAN = None
    m = MODEL
    m.rig.clock.t += plan["advance"]
    if plan["nested"] is not None:  # a second worker gets a copy of the record meanwhile
        result = m.other(ex.worker).handle([plan["nested"]])
        assert result.parked == 0, result


def enter(context, obj):
    with _acting(context, obj):
        pass


def enter_final(context, obj):
    with _acting(context, obj) as ex:
        _step_ran(ex, context)


def move(context, obj):
    with _acting(context, obj):
        pass


def work(context, obj):
    with _acting(context, obj) as ex:
        _step_ran(ex, context)
        _maybe_slow(ex)
        return "next"


def flaky(context, obj):
    """Raises for the machine's first ``fail_times`` executions of it."""
    with _acting(context, obj) as ex:
        _step_ran(ex, context)
        _maybe_slow(ex)
        if FAILURES[ex.cid] < context["fail_times"]:
            FAILURES[ex.cid] += 1
            raise RuntimeError("gateway down")
        return "next"


def definition(n_steps: int, flaky_at: int, local_at: int | None, max_retries: int) -> dict:
    """States s0..s{n-1} then ``end`` (as in test_engine_model): record ``steps`` k runs s_k's do;
    s_{flaky_at}'s do is flaky; the transition out of s_{local_at} is local."""
    names = [f"s{i}" for i in range(n_steps)] + ["end"]
    states = []
    for i in range(n_steps):
        tr = {"event": "next", "target": names[i + 1], "action": f"{HERE}.move"}
        if i == local_at:
            tr["local"] = True
        states.append({"name": names[i], "initial": i == 0, "entry_action": f"{HERE}.enter",
                       "do_action": f"{HERE}.{'flaky' if i == flaky_at else 'work'}",
                       "exit_action": f"{HERE}.move", "transitions": [tr]})
    states.append({"name": "end", "final": True, "entry_action": f"{HERE}.enter_final"})
    return {"name": MACHINE, "max_retries": max_retries, "states": states}


WORKERS = ("worker-a", "worker-b")
KINDS = ("STREAM", "CACHE", "RETRY", "CHECKPOINT")  # the sources whose sides change what the engine does


class FaultsModel(RuleBasedStateMachine):
    PLAIN_CACHE = False  # True: the cache sides offer only basic calls (Memcached): the composed step gate

    def __init__(self):
        super().__init__()
        self.rig: FaultRig | None = None
        self.tmp: str | None = None
        self.broken = False  # a check failed: teardown only cleans up

    @initialize(
        n_steps=st.integers(3, 5),
        data=st.data(),
        max_retries=st.integers(0, 2),
        snapshot_every=st.sampled_from([1, 2, 10]),
    )
    def setup(self, n_steps, data, max_retries, snapshot_every):
        global MODEL
        _reset()
        MODEL = self
        self.n_steps = n_steps
        self.local_at = data.draw(st.integers(0, n_steps - 1), label="local_at")
        self.flaky_at = data.draw(st.integers(0, n_steps - 1), label="flaky_at")
        self.max_retries = max_retries
        self.tmp = tempfile.mkdtemp(prefix="fsmlog-faults-")
        self.rig = FaultRig(self.tmp, [definition(n_steps, self.flaky_at, self.local_at, max_retries)],
                            plain_cache=self.PLAIN_CACHE,
                            RETRY_BASE_SECONDS=1.0, RETRY_CAP_SECONDS=RETRY_CAP, SNAPSHOT_EVERY=snapshot_every,
                            LEASE_SECONDS=LEASE, LEASE_WAIT_SECONDS=LEASE_WAIT)
        self.workers = [self.rig.worker(name, seed=i + 1) for i, name in enumerate(WORKERS)]
        self.by_name = {w.name: w for w in self.workers}
        self.observer = self.rig.worker("observer", seed=99)
        self.epoch: Counter = Counter()  # (cache side, cid) -> times that side forgot the machine
        # machines whose progress only one cache side knew when that side forgot it: a worker cut off from
        # the primary marked its steps on the secondary alone, then the secondary was flushed. Nothing but
        # the log knows those steps, and the primary's older mark looks current: the README's documented
        # double fault, under which a completed step may run again (counted, not a violation)
        self.sole_marks_lost: set[str] = set()
        self.cids: list[str] = []
        self.fail_times: dict[str, int] = {}
        self.redispatched: set[str] = set()
        self.cursor: dict[str, str | None] = {side: None for side in SIDES}
        for w in self.workers:  # some workers begin cut off from some primaries
            for kind in data.draw(st.sets(st.sampled_from(KINDS)), label=f"{w.name} cannot reach the primary of"):
                w.cut(kind, PRIMARY)
        for fail_times in data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=3), label="machines"):
            self.start(fail_times, 0)

    # ------------------------------------------------------------------ helpers

    def reaches(self, worker: str, kind: str, side: str) -> bool:
        return self.rig.workers[worker].reaches(kind, side)

    def other(self, worker: str):
        return self.workers[1] if worker == self.workers[0].name else self.workers[0]

    def running(self) -> list[str]:
        return [cid for cid in self.cids if not self.rig.fold(cid).terminal]

    def handle(self, worker: int, records):
        self.broken = True
        result = self.workers[worker].handle(records)
        # a partition or a lost lease may hand records back (failed items): settling redelivers them
        assert result.parked == 0, result
        self.broken = False
        return result

    # ------------------------------------------------------------------ rules: work

    @precondition(lambda self: len(self.cids) < 4)
    @rule(fail_times=st.integers(0, 3), worker=st.integers(0, 1))
    def start(self, fail_times, worker):
        cid = f"m{len(self.cids)}"
        self.workers[worker].engine.start(MACHINE, {"fail_times": fail_times}, correlation_id=cid)
        self.cids.append(cid)
        self.fail_times[cid] = fail_times

    @rule(data=st.data(), worker=st.integers(0, 1), dt=st.sampled_from([0.0, 1.5]))
    def deliver_any(self, data, worker, dt):
        """Any records of either log, any order, with duplicates (``dt`` seconds after the last rule)."""
        self.rig.clock.t += dt
        records = self.rig.all_records()
        picks = data.draw(st.lists(st.integers(0, len(records) - 1), min_size=1, max_size=10), label="picks")
        self.handle(worker, [records[i] for i in picks])

    @rule(worker=st.integers(0, 1), side=st.sampled_from(SIDES), dt=st.sampled_from([0.0, 1.5]))
    def deliver_next(self, worker, side, dt):
        """What one side's trigger does: the records after its iterator, in log order; a batch with
        failed items comes again from the first of them."""
        self.rig.clock.t += dt
        records = self.rig.read(side, self.cursor[side], 100)
        if records:
            failed = set(self.handle(worker, records).failed_item_ids)
            for i, (_, rec) in enumerate(records):  # the next batch starts at the first record handed back
                if rec.position in failed:
                    self.cursor[side] = records[i - 1][1].position if i else self.cursor[side]
                    break
            else:
                self.cursor[side] = records[-1][1].position

    @rule(advance=st.sampled_from([0.0, 2.0, RETRY_CAP + 1]), worker=st.integers(0, 1))
    def run_due_retries(self, advance, worker):
        self.rig.clock.t += advance
        self.workers[worker].engine.run_due_retries()

    @rule(data=st.data())
    def replay_redispatch(self, data):
        running = self.running()
        if not running:
            return
        cid = data.draw(st.sampled_from(running), label="redispatch")
        if self._redispatch(cid):
            self.redispatched.add(cid)

    def _redispatch(self, cid: str) -> bool:
        services = self.observer.services
        return redispatch(rebuild(cid, services), services, self.rig.clock) is not None

    # ------------------------------------------------------------------ rules: faults

    @rule(worker=st.integers(0, 1), kind=st.sampled_from(KINDS), side=st.sampled_from(SIDES))
    def flip_reach(self, worker, kind, side):
        """A worker loses (or regains) one side of one source; never both sides of a source at once."""
        w = self.workers[worker]
        if not w.reaches(kind, side):
            w.restore(kind, side)
        elif w.reaches(kind, PRIMARY if side == SECONDARY else SECONDARY):
            w.cut(kind, side)

    @rule(worker=st.integers(0, 1), side=st.sampled_from(SIDES))
    def partition_side(self, worker, side):
        """A worker loses every source of one side (and reaches every source of the other)."""
        w = self.workers[worker]
        w.restore()
        for kind in SOURCES:
            w.cut(kind, side)

    @rule(worker=st.integers(0, 1))
    def heal(self, worker):
        self.workers[worker].restore()

    @rule(side=st.sampled_from(SIDES), data=st.data())
    def cache_forgets(self, side, data):
        """A flush or restart of one cache side, or one machine's rows evicted from it."""
        cid = data.draw(st.one_of(st.none(), st.sampled_from(self.cids)), label="evict") if self.cids else None
        self.sole_marks_lost.update(c for c in self.rig.known_only_on(side) if cid is None or c == cid)
        self.rig.forget_cache(side, cid)
        for c in ([cid] if cid else self.cids):
            self.epoch[(side, c)] += 1

    @rule(side=st.sampled_from(SIDES), data=st.data())
    def checkpoints_forget(self, side, data):
        cid = data.draw(st.one_of(st.none(), st.sampled_from(self.cids)), label="drop") if self.cids else None
        self.rig.forget_checkpoints(side, cid)

    @rule(extra=st.sampled_from([1.0, 30.0]))
    def clock_jumps_past_the_lease(self, extra):
        self.rig.clock.t += LEASE + extra

    @rule(data=st.data(), worker=st.integers(0, 1), overrun=st.booleans(), nested=st.booleans())
    def slow_action(self, data, worker, overrun, nested):
        """A record whose do action takes ``LEASE`` + 1 s (or a quarter of the lease), meanwhile (maybe)
        the other worker handling a copy of the same record."""
        global PLAN
        records = [(side, r) for side, r in self.rig.all_records() if not decode(r.data).terminal]
        if not records:
            return
        side, rec = data.draw(st.sampled_from(records), label="slow record")
        PLAN = {"worker": self.workers[worker].name, "cid": rec.key,
                "advance": LEASE + 1.0 if overrun else LEASE / 4, "nested": (side, rec) if nested else None}
        try:
            self.handle(worker, [(side, rec)])
        finally:
            PLAN = None

    # ------------------------------------------------------------------ invariants

    @invariant()
    def guarantees_hold(self):
        if self.rig is None:
            return
        self.broken = True
        assert not VIOLATIONS, "\n".join(VIOLATIONS)
        appended = []
        for side, rec in self.rig.all_records():
            ev = decode(rec.data)
            if ev.kind in (STEP, COMPLETED):
                ex = EXECUTIONS.get(ev.context.get(CONTEXT_KEY))
                if ex is not None and ex.lost_to is not None:
                    appended.append(f"{ev.kind} steps {ev.steps} on the {side} log, by {ex.worker}'s execution of "
                                    f"{ex.first} (token {ex.token}) after execution {ex.lost_to} "
                                    f"(token {EXECUTIONS[ex.lost_to].token}) took its lease")
        assert not appended, "a holder that lost its lease appended its outcome: " + "; ".join(appended)
        for cid in self.cids:
            whole = self.rig.fold(cid)
            assert whole is not None, f"{cid} is in neither log"
            for w in [self.observer, *self.workers]:
                if not all(w.reaches("STREAM", side) for side in SIDES):
                    continue  # it cannot read one of the logs
                got = w.engine.status(cid)
                if got is not None and got.last != whole.last and _siblings(got.last, whole.last):
                    continue  # two holders of a split lease appended one step: the snapshot may keep either
                if cid in self.sole_marks_lost:
                    continue  # the documented double fault: a completed step ran again and may have saved
                    # a snapshot built without the records after it (README, "Under faults")
                assert got is not None and got.last == whole.last, (
                    f"{cid}: {w.name}'s status {_show(got and got.last)} != the fold of both logs {_show(whole.last)}")
        self.broken = False

    # ------------------------------------------------------------------ the end

    def settle(self) -> None:
        """Every side reachable; deliver both logs again and again, moving retries; once nothing moves
        (not even after the clock passed a lease, for both workers), redispatch what still runs."""
        for w in self.workers:
            w.restore()
        quiet = 0  # rounds in a row that changed nothing
        redispatch_rounds = 0
        for round_ in range(80):
            worker = round_ % 2
            records = self.rig.all_records()
            for record in records:
                self.handle(worker, [record])
            self.rig.clock.t += RETRY_CAP + 1 if quiet == 0 else LEASE + 1  # past backoffs; then past leases
            moved = self.workers[worker].engine.run_due_retries()
            if moved or len(self.rig.all_records()) != len(records):
                quiet = 0
                continue
            quiet += 1
            running = self.running()
            if not running or (quiet >= 3 and redispatch_rounds >= 3):
                return
            if quiet >= 3:
                redispatch_rounds += 1
                for cid in running:
                    if self._redispatch(cid):
                        self.redispatched.add(cid)

    def teardown(self):
        if self.rig is None:
            return
        try:
            if not self.broken:
                on_secondary = len(self.rig.read(SECONDARY))
                _note(f"records on the secondary log: {'none' if not on_secondary else 'some'}")
                self.settle()
                self.guarantees_hold()
                for cid in self.cids:
                    self.check_ending(cid)
        finally:
            self.rig.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            _reset()

    def check_ending(self, cid: str) -> None:
        state = self.rig.fold(cid)
        last = state.last
        where = (f"last record {last.describe()} ({last.kind}); retries pending: "
                 f"{ {side: self.rig.raw[side]['RETRY'].pending() for side in SIDES} }")
        assert state.terminal, f"{cid} was lost: still running after full redelivery, retries and replay; {where}"
        can_fail = self.fail_times[cid] > self.max_retries or cid in self.redispatched
        if state.status == "failed":
            assert can_fail, f"{cid} failed with a failure budget within max_retries: {state.error}"
            assert state.steps == self.flaky_at and last.error_type == "RuntimeError", where
        else:
            assert state.status == "completed", f"{cid} settled as {state.status}; {where}"
            assert state.steps == self.n_steps + 1, where


_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
MODEL_SETTINGS = settings(
    max_examples={"quick": 25, "slow": 1000}.get(_PROFILE, 120),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def test_engine_guarantees_under_faults_on_both_sides_of_every_source():
    run_state_machine_as_test(FaultsModel, settings=MODEL_SETTINGS)


class PlainCacheModel(FaultsModel):
    PLAIN_CACHE = True


def test_engine_guarantees_under_faults_with_plain_caches_on_both_sides():
    """The same model with Memcached-like cache sides: the gate composes per-step flags."""
    run_state_machine_as_test(PlainCacheModel, settings=MODEL_SETTINGS)


# ---------------------------------------------------------------- what the model found, as scripts

class Draws:
    """Hypothesis' ``data`` when a script replays the model: each draw takes the next value (a callable
    is given the model, e.g. to pick a record of its logs)."""

    def __init__(self, model: FaultsModel, *values):
        self.model = model
        self.values = list(values)

    def draw(self, strategy, label=None):
        value = self.values.pop(0)
        return value(self.model) if callable(value) else value


def record(i: int):
    return lambda model: model.rig.all_records()[i]


def replay(setup: dict, draws: list, steps: list[tuple[str, dict]], model_class: type = FaultsModel) -> set[str]:
    """Run the model through ``steps`` (rule name, arguments; ``data`` is a list of draws), checking the
    invariants after each, then settle and check the endings as the hypothesis run does. Returns the
    machines excused as the documented double fault (``sole_marks_lost``)."""
    model = model_class()
    try:
        model.setup(data=Draws(model, *draws), **setup)
        model.guarantees_hold()
        for name, kwargs in steps:
            if "data" in kwargs:
                kwargs = {**kwargs, "data": Draws(model, *kwargs["data"])}
            getattr(model, name)(**kwargs)
            model.guarantees_hold()
    except BaseException:
        model.broken = True
        model.teardown()
        raise
    excused = set(model.sole_marks_lost)
    model.teardown()
    return excused


ONE_MACHINE = dict(n_steps=3, max_retries=0, snapshot_every=1)


def test_model_a_holder_that_lost_its_lease_does_not_go_on_into_its_local_step():
    """worker-a's do of step 0 outlasts the lease; worker-b takes it over and runs steps 0 and 1 (local);
    worker-a must not then run step 1 (behind the local transition) as well."""
    replay(ONE_MACHINE, [0, 0, set(), set(), [0]],
           [("slow_action", dict(data=[record(0)], worker=0, overrun=True, nested=True))])


def test_model_a_stale_mark_on_the_secondary_cache_does_not_hide_that_the_primary_forgot():
    """worker-b cannot reach cache B, runs step 2 on A (its mark is not copied to B); A is flushed; B still
    says only step 1 is done: the record of step 2, delivered again, must not run (its successor is in the log)."""
    replay(ONE_MACHINE, [0, 0, set(), set(), [0]],
           [("deliver_any", dict(data=[[0]], worker=0, dt=0.0)),
            ("flip_reach", dict(worker=1, kind="CACHE", side=SECONDARY)),
            ("deliver_next", dict(worker=1, side=PRIMARY, dt=0.0)),
            ("cache_forgets", dict(side=PRIMARY, data=[None]))])


def _siblings(a, b) -> bool:
    """Two outcomes of one attempt by two holders (a partition): same step, state and event, other context.

    The snapshot a holder saves holds its own sibling, so status may show either one until the machine
    moves on (README, "Under faults"); any other disagreement with the fold is a failure."""
    same = ("correlation_id", "kind", "steps", "retries", "state", "event")
    return all(getattr(a, f) == getattr(b, f) for f in same)


def test_model_status_folds_both_holders_records_after_a_partition():
    """A partition between the cache sides lets both workers run step 2 (bounded overlap): two records
    of step 3 land, and the snapshot each holder saves holds its own. Status (snapshot + tail) equals
    the fold of both logs up to which of the two siblings it shows; nothing else may differ."""
    replay(ONE_MACHINE, [0, 0, set(), {"RETRY", "CACHE", "CHECKPOINT"}, [0]],
           [("slow_action", dict(data=[record(0)], worker=0, overrun=False, nested=True)),
            ("slow_action", dict(data=[record(1)], worker=0, overrun=False, nested=True))])


@pytest.mark.parametrize("model_class", [FaultsModel, PlainCacheModel], ids=["high-water", "plain"])
def test_model_a_step_run_on_the_secondary_alone_is_not_run_again_when_the_primary_is_back(model_class):
    """worker-a cannot reach the primary cache; worker-b runs steps 0 and 1 on it; worker-a runs step 2 on
    the secondary (the primary's flags say only step 1 is done). When everything is reachable again,
    record 2 delivered to worker-a must be skipped: the secondary proves step 2 done. With plain
    caches the secondary answered by machine ("nothing known") and step 2 ran again: found on
    Python 3.13, where a runtime protocol check did not see through the test's partition proxy and
    the rig took the composed path unasked."""
    replay(ONE_MACHINE, [0, 0, {"CACHE"}, set(), [0]],
           [("deliver_any", dict(data=[[0]], worker=0, dt=0.0)),
            ("deliver_any", dict(data=[[0]], worker=1, dt=1.5)),
            ("deliver_any", dict(data=[[1]], worker=0, dt=0.0))], model_class)


@pytest.mark.parametrize("model_class", [FaultsModel, PlainCacheModel], ids=["high-water", "plain"])
def test_model_the_documented_double_fault_is_wider_for_plain_caches(model_class):
    """worker-a, cut off from the primary cache, runs step 2 on the secondary alone; back on the primary it
    runs step 3 there; then the secondary is flushed. A high-water primary (completed 3) still proves step
    2 done: nothing to excuse. A plain primary holds done flags for steps 0, 1 and 3 but not 2, so a
    redelivered record 2 may run again: the README's double fault (a step marked on the secondary alone,
    then the secondary flushed), which the model counts instead of failing on (found on Python 3.10)."""
    excused = replay(ONE_MACHINE, [0, 0, {"CACHE"}, set(), [0]],
                     [("deliver_next", dict(worker=0, side=PRIMARY, dt=0.0)),
                      ("deliver_any", dict(data=[[0]], worker=1, dt=0.0)),
                      ("clock_jumps_past_the_lease", dict(extra=1.0)),
                      ("slow_action", dict(data=[record(1)], worker=0, overrun=False, nested=False)),
                      ("heal", dict(worker=0)),
                      ("slow_action", dict(data=[record(2)], worker=0, overrun=False, nested=False)),
                      ("cache_forgets", dict(side=SECONDARY, data=[None]))], model_class)
    assert excused == ({"m0"} if model_class.PLAIN_CACHE else set())


def test_model_a_step_run_again_under_the_double_fault_may_leave_a_stale_snapshot():
    """The plain-cache double fault above, then the re-run of step 2 saves a snapshot of step 3 at a
    position after the machine's completion (its other sides' snapshot was on the secondary): status
    (snapshot + tail) shows step 3 while the log holds the completion. Excused with the re-run; the
    log, and every fold of it, still say completed (found on Python 3.10, 3.11 and 3.13)."""
    excused = replay(ONE_MACHINE, [0, 0, {"CACHE", "CHECKPOINT"}, set(), [0]],
                     [("deliver_next", dict(worker=0, side=PRIMARY, dt=0.0)),
                      ("clock_jumps_past_the_lease", dict(extra=1.0)),
                      ("deliver_any", dict(data=[[0]], worker=1, dt=0.0)),
                      ("slow_action", dict(data=[record(1)], worker=0, overrun=False, nested=False)),
                      ("heal", dict(worker=0)),
                      ("slow_action", dict(data=[record(2)], worker=0, overrun=False, nested=False)),
                      ("clock_jumps_past_the_lease", dict(extra=1.0)),
                      ("cache_forgets", dict(side=SECONDARY, data=[None]))], PlainCacheModel)
    assert excused == {"m0"}
