"""The dispatch engine on the embedded backend (one SQLite file in a temp dir), driven record by record.

Clock, sleep and rng are injected, so backoff and lease waits are checked exactly and no test waits.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from eventlog.codec import decode, encode
from eventlog.event import START, Event
from handlers.backoff import full_jitter
from handlers.engine import Engine, Inbound
from handlers.errors import HandlerError

HERE = __name__  # actions below are named by dotted path, like fsm.yaml names them

CALLS: list[str] = []
TOKENS: dict[str, set[int]] = defaultdict(set)  # idempotency key -> fence tokens seen
FAILURES: dict[str, int] = defaultdict(int)  # correlation id -> how many times Flaky raised


def _recorder(name: str, returns: str | None = None):
    def action(context, obj):
        CALLS.append(name)
        TOKENS[obj["idempotency_key"]].add(obj["fence_token"])
        return returns

    action.__name__ = action.__qualname__ = name
    return action


a_entry = _recorder("a.entry")
a_do = _recorder("a.do", "go")
a_exit = _recorder("a.exit")
go_action = _recorder("go.action")
b_entry = _recorder("b.entry")
b_do = _recorder("b.do", "finish")
b_exit = _recorder("b.exit")
c_entry = _recorder("c.entry")
returns_next = _recorder("next", "next")


def flaky(context, obj):
    """Raises for the first ``fail_times`` attempts of each machine (the context says how many)."""
    CALLS.append(f"flaky retries={context.retries}")
    if FAILURES[context.correlation_id] < context.get("fail_times", 0):
        FAILURES[context.correlation_id] += 1
        raise RuntimeError("gateway down")
    return "ok"


def returns_unknown_event(context, obj):
    return "nowhere"


def stores_object(context, obj):
    context["when"] = object()
    return "ok"


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    TOKENS.clear()
    FAILURES.clear()


def flow(local: bool = False) -> dict:
    go = {"event": "go", "target": "b", "action": f"{HERE}.go_action"}
    if local:
        go["local"] = True
    return {
        "name": "flow",
        "states": [
            {"name": "a", "initial": True, "entry_action": f"{HERE}.a_entry", "do_action": f"{HERE}.a_do",
             "exit_action": f"{HERE}.a_exit", "transitions": [go]},
            {"name": "b", "entry_action": f"{HERE}.b_entry", "do_action": f"{HERE}.b_do",
             "exit_action": f"{HERE}.b_exit", "transitions": [{"event": "finish", "target": "c"}]},
            {"name": "c", "final": True, "entry_action": f"{HERE}.c_entry"},
        ],
    }


def single(name: str, do: str, max_retries: int | None = None) -> dict:
    m = {
        "name": name,
        "states": [
            {"name": "x", "initial": True, "do_action": f"{HERE}.{do}",
             "transitions": [{"event": "ok", "target": "done"}]},
            {"name": "done", "final": True},
        ],
    }
    if max_retries is not None:
        m["max_retries"] = max_retries
    return m


def evolving(s2_entry: bool = False, event: str = "next") -> dict:
    s2 = {"name": "s2", "do_action": f"{HERE}.returns_next", "transitions": [{"event": "next", "target": "s3"}]}
    if s2_entry:
        s2["entry_action"] = f"{HERE}.b_entry"
    return {
        "name": "evolving",
        "states": [
            {"name": "s1", "initial": True, "do_action": f"{HERE}.returns_next",
             "transitions": [{"event": event, "target": "s2"}]},
            s2,
            {"name": "s3", "final": True},
        ],
    }




def test_start_drive_completed_with_action_order(rig_factory):
    rig = rig_factory([flow()])
    cid = rig.engine.start("flow", {"n": 1})
    rig.drive()
    state = rig.engine.status(cid)
    assert state.status == "completed" and state.state == "c" and state.steps == 3
    assert CALLS == ["a.entry", "a.do", "a.exit", "go.action", "b.entry", "b.do", "b.exit", "c.entry"]
    kinds = [(e.kind, e.steps, e.state, e.event) for e in rig.records(cid)]
    assert kinds == [("start", 0, "a", None), ("step", 1, "a", "go"), ("step", 2, "b", "finish"),
                     ("completed", 3, "c", None)]
    assert rig.metric("MachinesCompleted", "flow") == 1
    assert rig.metric("Transitions", "flow") == 3


def test_local_transition_runs_in_the_same_invocation(rig_factory):
    rig = rig_factory([flow(local=True)])
    cid = rig.engine.start("flow")
    result = rig.engine.handle(rig.next_batch())
    assert result.handled == 1
    assert CALLS == ["a.entry", "a.do", "a.exit", "go.action", "b.entry", "b.do"]
    records = rig.records(cid)
    assert [(e.kind, e.steps, e.state, e.event) for e in records] == [("start", 0, "a", None),
                                                                      ("step", 2, "b", "finish")]
    # each local step ran under its own idempotency key
    assert f"{cid}:0" in TOKENS and f"{cid}:1" in TOKENS


def test_failing_action_retries_with_backoff_then_succeeds(rig_factory):
    rig = rig_factory([single("pay", "flaky", max_retries=3)])
    cid = rig.engine.start("pay", {"fail_times": 2})
    expected_rng = random.Random(7)
    base, cap = rig.settings.RETRY_BASE_SECONDS, rig.settings.RETRY_CAP_SECONDS

    for attempt in (1, 2):
        started = rig.clock.t
        result = rig.engine.handle(rig.next_batch())
        assert result.outcomes[-1]["outcome"] == "retry"
        due = started + full_jitter(attempt, base, cap, expected_rng)
        assert rig.services.retries.pending() == 1
        rig.clock.t = due - 1e-6
        assert rig.engine.run_due_retries() == 0  # not before its backoff
        rig.clock.t = due
        assert rig.engine.run_due_retries() == 1
    rig.drive()

    state = rig.engine.status(cid)
    assert state.status == "completed"
    retries = [e for e in rig.records(cid) if e.kind == "retry"]
    assert [(e.retries, e.error_type, e.error_message) for e in retries] == [
        (1, "RuntimeError", f"{HERE}.flaky failed: gateway down"),  # the action that raised is named
        (2, "RuntimeError", f"{HERE}.flaky failed: gateway down")]
    assert CALLS == ["flaky retries=0", "flaky retries=1", "flaky retries=2"]
    assert rig.metric("StepsRetried", "pay") == 2


def test_exhausted_retries_fail_the_machine_visibly(rig_factory):
    rig = rig_factory([single("pay", "flaky", max_retries=1)])
    cid = rig.engine.start("pay", {"fail_times": 99})
    rig.drive()
    state = rig.engine.status(cid)
    assert state.status == "failed"
    last = rig.records(cid)[-1]
    assert last.kind == "failed" and last.error_type == "RuntimeError"
    assert "gateway down" in last.error_message and f"{HERE}.flaky" in last.error_message
    assert "after 1 retries" in last.error_message
    assert rig.metric("MachinesFailed", "pay") == 1
    assert rig.metric("ActionErrors", "pay") == 2


def test_event_without_transition_fails_naming_state_and_event(rig_factory):
    rig = rig_factory([single("bad", "returns_unknown_event")])
    cid = rig.engine.start("bad")
    rig.drive()
    last = rig.records(cid)[-1]
    assert last.kind == "failed" and last.error_type == "NoTransition"
    assert "'x'" in last.error_message and "'nowhere'" in last.error_message
    assert rig.engine.status(cid).status == "failed"


def test_context_value_of_bad_type_fails_naming_the_key(rig_factory):
    rig = rig_factory([single("ctx", "stores_object")])
    cid = rig.engine.start("ctx", {"fine": 1})
    rig.drive()
    last = rig.records(cid)[-1]
    assert last.kind == "failed" and last.error_type == "ContextValueError"
    assert "context.when" in last.error_message and "object" in last.error_message
    assert last.context == {"fine": 1}  # the last good context is kept


def test_duplicate_record_is_skipped(rig_factory):
    rig = rig_factory([flow()])
    rig.engine.start("flow")
    batch = rig.next_batch()
    assert rig.engine.handle(batch).handled == 1
    calls = list(CALLS)
    again = rig.engine.handle(batch)  # redelivery of the same record (Lambda retried the batch)
    assert again.handled == 0 and again.skipped == 1
    assert CALLS == calls
    assert rig.metric("StepsSkippedAsDone", "flow") == 1
    # the same record twice in one batch runs once too
    other = rig.engine.start("flow")
    fresh = [i for i in rig.next_batch() if decode(i.data).correlation_id == other]
    result = rig.engine.handle(fresh + fresh)
    assert result.handled == 1 and result.skipped == 1


def test_lease_held_elsewhere_waits_then_reports_the_item_failed(rig_factory):
    rig = rig_factory([flow()])
    cid = rig.engine.start("flow")
    assert rig.services.cache.acquire(f"lease:{cid}", "another-worker", 600) is not None
    batch = rig.next_batch()
    started = rig.clock.t
    result = rig.engine.handle(batch)
    assert result.failed_item_ids == [batch[0].item_id]
    assert result.handled == 0 and CALLS == []
    assert rig.clock.t - started >= rig.settings.LEASE_WAIT_SECONDS  # it waited (on the injected clock)
    assert rig.metric("LeaseBusy") == 1
    # once the other worker lets go, the redelivered record runs
    rig.services.cache.release(f"lease:{cid}", "another-worker", rig.services.cache.holder(f"lease:{cid}")[1])
    assert rig.engine.handle(batch).handled == 1


def test_fence_token_strictly_increases_across_steps(rig_factory):
    rig = rig_factory([flow()])
    cid = rig.engine.start("flow")
    rig.drive()
    per_step = [TOKENS[f"{cid}:{n}"] for n in range(3)]
    assert all(len(tokens) == 1 for tokens in per_step)  # one lease per step, shared by its actions
    tokens = [min(t) for t in per_step]
    assert tokens == sorted(tokens) and len(set(tokens)) == 3


def test_poison_records_are_parked_and_the_batch_goes_on(rig_factory):
    rig = rig_factory([flow()])
    cid = rig.engine.start("flow")
    good = rig.next_batch()[0]
    garbage = Inbound("p-1", b"\x93not a record", "test-source", "p-1")
    ghost = Event(START, "ghost-1", "ghost", "0" * 16, 0, 0, "a", None, 1.0)
    unknown = Inbound("p-2", encode(ghost), "test-source", "p-2")
    result = rig.engine.handle([garbage, good, unknown])
    assert result.parked == 2 and result.handled == 1 and result.failed_item_ids == []
    letters = {letter.position: letter for letter in rig.services.dead_letters.list()}
    assert letters["p-1"].data == b"\x93not a record" and "undecodable" in letters["p-1"].reason
    assert "unknown machine 'ghost'" in letters["p-2"].reason and letters["p-2"].source == "test-source"
    assert rig.metric("PoisonRecords") == 2
    rig.drive()
    assert rig.engine.status(cid).status == "completed"


def test_definition_change_compatible_continues_and_records_upgrade(rig_factory):
    rig = rig_factory([evolving()])
    cid = rig.engine.start("evolving")
    rig.engine.handle(rig.next_batch())  # now a step record written under v1
    v1 = rig.engine.definitions.machine("evolving").hash
    upgraded = rig.make_engine([evolving(s2_entry=True)], seed=8)
    v2 = upgraded.definitions.machine("evolving").hash
    assert v1 != v2
    rig.drive(upgraded)
    records = rig.records(cid)
    assert records[2].upgraded_from == v1 and records[2].definition_hash == v2
    assert upgraded.status(cid).status == "completed"
    assert rig.metric("DefinitionUpgrades", "evolving") == 1


def test_definition_change_incompatible_parks_with_both_hashes(rig_factory):
    rig = rig_factory([evolving()])
    cid = rig.engine.start("evolving")
    rig.engine.handle(rig.next_batch())
    v1 = rig.engine.definitions.machine("evolving").hash
    changed = rig.make_engine([evolving(event="advance")], seed=9)  # s1 no longer fires "next"
    v3 = changed.definitions.machine("evolving").hash
    result = changed.handle(rig.next_batch())
    assert result.parked == 1
    (letter,) = rig.services.dead_letters.list()
    assert v1 in letter.reason and v3 in letter.reason and cid in letter.reason
    assert changed.status(cid).status == "running"


def test_abort_stops_a_machine(rig_factory):
    rig = rig_factory([flow()])
    cid = rig.engine.start("flow")
    rig.engine.handle(rig.next_batch())  # pending: step 1 (a --go--> b)
    calls = list(CALLS)
    ev = rig.engine.abort(cid, "customer cancelled")
    assert ev.kind == "aborted" and ev.error_message == "customer cancelled"
    result = rig.engine.handle(rig.next_batch())  # the pending step and the aborted record
    assert result.handled == 0 and CALLS == calls
    state = rig.engine.status(cid)
    assert state.status == "aborted" and state.state == "a"
    assert rig.metric("AbortedSteps", "flow") == 1
    with pytest.raises(HandlerError, match="already ended"):
        rig.engine.abort(cid)


def keeps_catalogue(context, obj):
    """Puts a large dict in the environment store and keeps only its id in the context."""
    env_id = f"catalogue:{context.correlation_id}"
    obj["environment"].put(env_id, {"items": [{"sku": f"sku-{i}", "price": i} for i in range(2000)]})
    context["catalogue"] = env_id
    return "ok"


def reads_catalogue(context, obj):
    catalogue = obj["environment"].get(context["catalogue"])
    context["items"] = len(catalogue["items"])
    return "ok"


def test_actions_keep_large_dicts_in_the_environment_store_by_id(rig_factory):
    machine = {
        "name": "env",
        "states": [
            {"name": "load", "initial": True, "do_action": f"{HERE}.keeps_catalogue",
             "transitions": [{"event": "ok", "target": "use"}]},
            {"name": "use", "do_action": f"{HERE}.reads_catalogue",
             "transitions": [{"event": "ok", "target": "done"}]},
            {"name": "done", "final": True},
        ],
    }
    rig = rig_factory([machine])
    cid = rig.engine.start("env")
    rig.drive()
    state = rig.engine.status(cid)
    assert state.status == "completed" and state.context["items"] == 2000
    assert max(len(r.context_raw) for r in rig.records(cid)) < 200  # only the id travels in the log
    assert rig.engine.environment.get(f"catalogue:{cid}")["items"][1999] == {"sku": "sku-1999", "price": 1999}


SLOW: dict = {}  # the test's clock and cache, for the action below


def slow_then_steal(context, obj):
    """Takes longer than the lease, and meanwhile another worker takes the next machine's lease."""
    SLOW["clock"].t += SLOW["lease_s"] + 1
    victim = SLOW["victim"]
    SLOW["cache"].acquire(f"lease:{victim}", "another-worker", 600)
    return "ok"


def test_a_lease_taken_over_while_earlier_records_ran_is_taken_afresh_before_running(rig_factory):
    """Leases of a whole batch are taken up front and renewed between records; one that expired
    and went to another worker meanwhile is never run under. The slow step's own lease ran out
    but nobody took it (its fence counter did not move), so its outcome stands."""
    rig = rig_factory([single("slow", "slow_then_steal"), single("quick", "a_do")])
    rig.engine.start("slow")
    victim = rig.engine.start("quick")
    SLOW.update(clock=rig.clock, lease_s=rig.settings.LEASE_SECONDS, victim=victim, cache=rig.services.cache)
    rig.services.cache.clock = rig.clock  # leases expire on the test's clock too
    batch = rig.next_batch()
    result = rig.engine.handle(batch)
    assert result.handled == 1 and result.failed_item_ids == [batch[1].item_id]
    assert "a.do" not in CALLS  # the quick machine's step did not run under a lease held elsewhere


def test_an_abort_that_could_not_wait_for_the_lease_is_recorded_by_the_next_holder(rig_factory):
    """The operator's abort sets the flag, then times out waiting for the lease (LeaseBusy). The
    machine must not sit flagged forever: whoever holds its lease next records the abort."""
    rig = rig_factory([flow()])
    cid = rig.engine.start("flow")
    rig.engine.handle(rig.next_batch())  # pending: step 1 (a --go--> b)
    calls = list(CALLS)
    rig.engine.gate.abort(cid)  # the flag an abort sets before it waits for the lease
    result = rig.engine.handle(rig.next_batch())
    assert CALLS == calls  # nothing ran
    assert result.outcomes == [{"correlation_id": cid, "outcome": "aborted", "steps": 1}]
    state = rig.engine.status(cid)
    assert state.status == "aborted" and state.state == "a"
    again = rig.engine.handle(rig.next_batch())  # the abort record itself: terminal, nothing more
    assert again.handled == 0 and rig.engine.status(cid).status == "aborted"


def test_action_wrapper_is_asked_once_per_action_and_runs_in_its_place(rig_factory):
    """The hook a test harness uses (fsmlog.testing records every call through it): asked once per
    dotted path, cached, and what it returns is what runs."""
    rig = rig_factory([flow()])
    wrapped: list[str] = []

    def wrapper(dotted, action):
        wrapped.append(dotted.rsplit(".", 1)[1])

        def around(context, obj):
            CALLS.append(f"around {dotted.rsplit('.', 1)[1]}")
            return action(context, obj)

        return around

    engine = Engine(rig.definitions, rig.services, rig.settings, clock=rig.clock, sleep=rig.clock.sleep,
                    rng=random.Random(7), worker_id="wrapped", action_wrapper=wrapper,
                    keep_leases_in_thread=False)
    first, second = engine.start("flow"), engine.start("flow")
    rig.drive(engine)
    assert engine.status(first).status == engine.status(second).status == "completed"
    names = ["a_entry", "a_do", "a_exit", "go_action", "b_entry", "b_do", "b_exit", "c_entry"]
    assert sorted(wrapped) == sorted(names)  # two machines, each action wrapped once
    assert CALLS.count("around a_do") == 2 and CALLS.count("a.do") == 2
    assert CALLS[:2] == ["around a_entry", "a.entry"]
    assert not engine.keep_leases_in_thread
