"""A batch's dispatch when things go wrong around it, on the embedded backend.

Redelivery of a batch that scheduled a retry, an operator's abort racing the final
step, a done mark or a retry schedule that fails after the append, a retry record
over the size limit, and leases held across a batch that waits. Every service of the
rig shares one injected clock (leases, flags, claims, retries and the engine), so
lease expiry and backoff are exact and no test waits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from eventlog.codec import decode
from eventlog.errors import BackendError, RecordTooLarge
from handlers.errors import LeaseBusy
from handlers.worker import Worker
from tests.unit.engine_rig import Clock

HERE = __name__

CALLS: Counter = Counter()  # (action, correlation id) -> how many times it ran
HOOKS: dict = {}  # what the actions below reach into (set per test)


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    HOOKS.clear()
    yield
    HOOKS.clear()


def _counting(name: str, returns: str | None = None):
    def action(context, obj):
        CALLS[(name, context.correlation_id)] += 1
        return returns

    action.__name__ = action.__qualname__ = name
    return action


a_entry = _counting("a.entry")
a_do = _counting("a.do", "go")
b_entry = _counting("b.entry")
b_do = _counting("b.do", "finish")


def always_fails(context, obj):
    CALLS[("fails", context.correlation_id)] += 1
    raise RuntimeError("gateway down")


def abort_from_an_operator(context, obj):
    """The final state's entry: meanwhile an operator aborts the machine (another process)."""
    CALLS[("final.entry", context.correlation_id)] += 1
    try:
        HOOKS["operator"].abort(context.correlation_id, "operator gave up")
    except Exception as exc:  # a fixed abort may refuse or wait out the lease: that is fine
        HOOKS["abort_refused"] = exc


def grows_context(context, obj):
    context["blob"] = "x" * (1100 * 1024)  # over the 1 MiB record limit
    return "go"


def looks_at_lease(context, obj):
    HOOKS["holder_seen"] = HOOKS["cache"].holder(f"lease:{HOOKS['watched']}")


def flow() -> dict:
    return {
        "name": "flow",
        "states": [
            {"name": "a", "initial": True, "entry_action": f"{HERE}.a_entry", "do_action": f"{HERE}.a_do",
             "transitions": [{"event": "go", "target": "b"}]},
            {"name": "b", "entry_action": f"{HERE}.b_entry", "do_action": f"{HERE}.b_do",
             "transitions": [{"event": "finish", "target": "c"}]},
            {"name": "c", "final": True},
        ],
    }


def failing(max_retries: int = 3) -> dict:
    return {
        "name": "failing",
        "max_retries": max_retries,
        "states": [
            {"name": "x", "initial": True, "do_action": f"{HERE}.always_fails",
             "transitions": [{"event": "ok", "target": "done"}]},
            {"name": "done", "final": True},
        ],
    }


def racing() -> dict:
    return {
        "name": "racing",
        "states": [
            {"name": "a", "initial": True, "do_action": f"{HERE}.a_do",
             "transitions": [{"event": "go", "target": "end"}]},
            {"name": "end", "final": True, "entry_action": f"{HERE}.abort_from_an_operator"},
        ],
    }


def growing() -> dict:
    return {
        "name": "growing",
        "states": [
            {"name": "a", "initial": True, "do_action": f"{HERE}.grows_context",
             "transitions": [{"event": "go", "target": "b", "local": True}]},
            {"name": "b", "entry_action": f"{HERE}.always_fails", "transitions": [{"event": "ok", "target": "c"}]},
            {"name": "c", "final": True},
        ],
    }


def watcher() -> dict:
    return {"name": "watcher", "states": [{"name": "w", "initial": True, "final": True,
                                           "entry_action": f"{HERE}.looks_at_lease"}]}




# ---------------------------------------------------------------- 1. redelivery of a retried step


def test_redelivered_record_that_scheduled_a_retry_is_not_run_again(rig_factory):
    rig = rig_factory([failing()])
    cid = rig.engine.start("failing")
    batch = rig.next_batch()
    assert rig.engine.handle(batch).outcomes[-1]["outcome"] == "retry"
    assert rig.services.retries.pending() == 1
    rig.engine.handle(batch)  # Lambda redelivers the batch (an earlier record of it failed)
    assert CALLS[("fails", cid)] == 1
    assert rig.services.retries.pending() == 1


def test_worker_redelivery_loop_does_not_multiply_retries(rig_factory):
    rig = rig_factory([flow(), failing()])
    blocked = rig.engine.start("flow")
    doomed = rig.engine.start("failing")
    assert rig.services.cache.acquire(f"lease:{blocked}", "crashed-worker", 10_000) is not None
    monotonic = Clock(0.0)
    worker = Worker(rig.engine, rig.log, claim_ttl_s=60.0, monotonic=monotonic, sleep=monotonic.sleep)
    result = worker.run_once()
    assert result.failed_item_ids  # the blocked machine's record is left for redelivery
    assert CALLS[("fails", doomed)] == 1
    assert rig.services.retries.pending() == 1


# ---------------------------------------------------------------- 2. abort racing a step in flight


def test_abort_racing_the_final_step_does_not_override_the_completion(rig_factory):
    rig = rig_factory([racing()])
    HOOKS["operator"] = rig.make_engine(worker_id="operator")
    cid = rig.engine.start("racing")
    rig.engine.handle(rig.next_batch())  # pending: step 1 (a --go--> end)
    rig.engine.handle(rig.next_batch())  # runs step 1; the operator aborts while it runs
    assert CALLS[("final.entry", cid)] == 1  # the final state was entered: the machine completed
    assert rig.engine.status(cid).status == "completed"
    assert [(e.kind, e.steps) for e in rig.records(cid)] == [("start", 0), ("step", 1), ("completed", 2)]
    refused = HOOKS.get("abort_refused")  # the worker holds the lease while the step runs
    assert type(refused) is LeaseBusy and not refused.for_held_leases


class _FailingSaves:
    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name

    def save(self, cid, version, data):
        raise BackendError("checkpoint table throttled")

    def load(self, cid):
        return self.inner.load(cid)


def test_snapshot_plus_tail_equals_the_full_fold_after_an_abort_race(rig_factory):
    rig = rig_factory([racing()])
    # the operator's snapshot write fails (it is best effort); the worker's succeeds
    HOOKS["operator"] = rig.make_engine(worker_id="operator", services=replace(rig.services,
                                                            checkpoints=_FailingSaves(rig.services.checkpoints)))
    cid = rig.engine.start("racing")
    rig.engine.handle(rig.next_batch())
    rig.engine.handle(rig.next_batch())
    from_snapshot = rig.engine.status(cid)
    assert from_snapshot.last == rig.full_fold(cid).last, (
        f"snapshot+tail says {from_snapshot.status}, the whole log says {rig.full_fold(cid).status}")


# ---------------------------------------------------------------- 3. the done mark fails after the append


class _MarkFails:
    """The SQLite cache whose done mark fails (a transient cache error); releasing still works."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name

    def begin_step(self, *a):
        return self.inner.begin_step(*a)

    def end_step(self, cid, steps, owner, token, done, dedupe_s):
        if done:
            raise BackendError("cache timed out")
        return self.inner.end_step(cid, steps, owner, token, done, dedupe_s)

    def end_steps(self, items, owner, dedupe_s):
        if any(done for *_, done in items):
            raise BackendError("cache timed out")
        return self.inner.end_steps(items, owner, dedupe_s)

    def abort_machine(self, *a):
        return self.inner.abort_machine(*a)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_failed_done_mark_still_releases_the_lease(rig_factory):
    rig = rig_factory([flow()])
    flaky_cache = replace(rig.services, cache=_MarkFails(rig.services.cache))
    first = rig.make_engine(worker_id="worker-1", services=flaky_cache)
    cid = first.start("flow")
    assert first.handle(rig.next_batch()).handled == 1  # step 0 appended its next record
    assert rig.services.cache.holder(f"lease:{cid}") is None
    second = rig.make_engine(worker_id="worker-2")
    assert second.handle(rig.next_batch()).failed_item_ids == []


class _ScheduleFails:
    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name

    def schedule(self, retries):
        raise BackendError("retry table throttled")

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_retry_schedule_failure_does_not_rerun_steps_whose_records_were_appended(rig_factory):
    rig = rig_factory([flow(), failing()])
    engine = rig.make_engine(worker_id="worker-1", services=replace(rig.services, retries=_ScheduleFails(rig.services.retries)))
    ok = engine.start("flow")
    engine.start("failing")
    batch = rig.next_batch()
    engine.handle(batch)
    assert [e.kind for e in rig.records(ok)] == ["start", "step"]  # its next record is in the log
    rig.engine.handle(batch)  # Lambda redelivers what was reported failed (here: all of it)
    assert CALLS[("a.entry", ok)] == 1
    assert [e.kind for e in rig.records(ok)] == ["start", "step"]


# ---------------------------------------------------------------- 4. an oversized retry record


def test_oversized_retry_record_does_not_crash_the_batch(rig_factory):
    rig = rig_factory([flow(), growing()])
    ok = rig.engine.start("flow")
    big = rig.engine.start("growing")
    batch = rig.next_batch()
    try:
        result = rig.engine.handle(batch)
    except RecordTooLarge as exc:  # (reported short: the record's repr is over a megabyte)
        pytest.fail(f"handle() raised {type(exc).__name__}; the batch's other step was not committed", pytrace=False)
    assert result.failed_item_ids == []
    assert [e.kind for e in rig.records(ok)] == ["start", "step"]  # the other machine's step committed
    state = rig.engine.status(big)  # the oversized record is not sent: the machine fails, saying why
    assert (state.status, state.state, state.steps, state.last.error_type) == ("failed", "a", 1, "RecordTooLarge")
    assert [e.kind for e in rig.records(big)] == ["start", "failed"]


# ---------------------------------------------------------------- 5. leases within one batch


def test_duplicate_later_in_the_batch_keeps_the_lease_of_an_uncommitted_step(rig_factory):
    """Guard: a done duplicate's lease is given back only at the commit (``ends``), never while an
    earlier step of the same machine in the batch is still unappended."""
    rig = rig_factory([flow(), watcher()])
    cid = rig.engine.start("flow")
    start_batch = rig.next_batch()
    rig.engine.handle(start_batch)  # step 0 done; step 1 pending
    step1 = rig.next_batch()
    rig.engine.start("watcher")
    watch = rig.next_batch()
    HOOKS.update(cache=rig.services.cache, watched=cid)
    # step 1 runs, then the (already done) start record comes again, e.g. a client's repeated start()
    rig.engine.handle(step1 + start_batch + watch)
    assert HOOKS["holder_seen"] is not None, "machine's lease was free while its step 1 was not yet committed"


def test_leases_held_for_uncommitted_steps_do_not_expire_while_the_batch_waits(rig_factory):
    rig = rig_factory([flow()], LEASE_SECONDS=60.0, LEASE_WAIT_SECONDS=30.0)
    x = rig.engine.start("flow")
    busy = [rig.engine.start("flow") for _ in range(3)]
    for cid in busy:
        rig.services.cache.acquire(f"lease:{cid}", "crashed-worker", 10_000)
    batch = rig.next_batch()
    started = rig.clock.t
    other = rig.make_engine(worker_id="worker-2")
    redelivered = [i for i in batch if decode(i.data).correlation_id == x]

    def sleep(seconds):
        rig.clock.sleep(seconds)
        if rig.clock.t > started + 60 and "other" not in HOOKS:  # e.g. the claim was handed to another worker
            HOOKS["other"] = other.handle(redelivered)

    first = rig.make_engine(worker_id="worker-1", sleep=sleep)
    first.handle(batch)
    if "other" not in HOOKS:  # a fixed engine gave up waiting in time and committed first
        HOOKS["other"] = other.handle(redelivered)
    assert CALLS[("a.entry", x)] == 1, "step 0 of x ran on two workers, neither having committed"
