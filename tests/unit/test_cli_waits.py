"""The status table and ``fsmlog run``'s lines say what a waiting machine waits for (a timer, an
event from outside, its children) instead of a bare ``running``, within 80 columns."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from eventlog.codec import decode
from eventlog.event import RETRY
from fsmlog.cli import output as out
from fsmlog.cli.machines import waiting_line
from fsmlog.cli.waits import WaitWords, scheduled_line
from projections.state import MachineState

HERE = __name__


def go(context, obj):
    return "go"


def split(context, obj):
    obj["children"].start("item", [{"n": 1}, {"n": 2}])
    return "started"


def machines() -> list[dict]:
    return [
        {"name": "timed", "states": [
            {"name": "a", "initial": True, "do_action": f"{HERE}.go",
             "transitions": [{"event": "go", "target": "b", "delay": "1h"}]},
            {"name": "b", "final": True}]},
        {"name": "asking", "states": [
            {"name": "asked", "initial": True, "wait": True, "transitions": [{"event": "yes", "target": "done"}]},
            {"name": "done", "final": True}]},
        {"name": "basket", "states": [
            {"name": "split", "initial": True, "do_action": f"{HERE}.split",
             "transitions": [{"event": "started", "target": "joining"}]},
            {"name": "joining", "wait": "children", "transitions": [{"event": "children_done", "target": "end"}]},
            {"name": "end", "final": True}]},
        {"name": "item", "states": [
            {"name": "charging", "initial": True, "do_action": f"{HERE}.go",
             "transitions": [{"event": "go", "target": "charged"}]},
            {"name": "charged", "final": True}]},
    ]


@pytest.fixture
def waiting(rig_factory):
    """One machine of each kind of wait, each handled until it waits (the children not yet run)."""
    rig = rig_factory(machines())
    ids = {name: rig.engine.start(name, {}) for name in ("timed", "asking", "basket")}
    for _ in range(2):  # the starts, then the records they appended; never the children's
        rig.engine.handle([r for r in rig.next_batch() if decode(r.data).correlation_id in ids.values()])
    return rig, ids


def render(renderable, width: int = 80) -> list[str]:
    buf = io.StringIO()
    Console(file=buf, width=width, highlight=False, soft_wrap=True).print(renderable)
    return buf.getvalue().splitlines()


def test_each_kind_of_wait_in_a_few_words(waiting):
    rig, ids = waiting
    words = WaitWords(rig.engine.definitions, clock=rig.clock)
    due = time.strftime("%H:%M:%S", time.localtime(rig.clock() + 3600))
    said = {name: words(rig.engine.status(cid)) for name, cid in ids.items()}
    assert said == {"timed": f"waiting until {due}", "asking": "waiting for an event",
                    "basket": "waiting for 2 children"}
    rig.clock.t += 3601
    assert words(rig.engine.status(ids["timed"])) == f"due since {due}"


def test_without_definitions_unjoined_child_ids_still_read_as_a_children_wait(waiting):
    rig, ids = waiting
    assert WaitWords(None, clock=rig.clock)(rig.engine.status(ids["basket"])) == "waiting for 2 children"


def test_a_retrying_timed_step_is_not_called_due(rig_factory):
    """A retry keeps its timer's past due time; it waits on its backoff, which the table shows as running."""
    rig = rig_factory(machines())
    cid = rig.engine.start("timed", {})
    rig.engine.handle(rig.next_batch())
    waiting = rig.engine.status(cid).last
    retry = waiting.evolve(kind=RETRY, retries=1)
    rig.clock.t += 3601
    due = time.strftime("%H:%M:%S", time.localtime(waiting.due))
    assert WaitWords(clock=rig.clock)(MachineState(retry)) is None
    assert WaitWords(clock=rig.clock)(MachineState(waiting)) == f"due since {due}"


def test_the_status_table_shows_the_waits_within_80_columns(waiting):
    rig, ids = waiting
    states = [rig.engine.status(cid) for cid in ids.values()]
    due = time.strftime("%H:%M:%S", time.localtime(rig.clock() + 3600))
    lines = render(out.machines_table(states, waits=WaitWords(rig.engine.definitions, clock=rig.clock)))
    assert max(len(line) for line in lines) <= 80
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in
            {out.short_id(cid) for cid in ids.values()}}
    assert f"waiting until {due}" in rows[out.short_id(ids["timed"])]
    assert "waiting for an event" in rows[out.short_id(ids["asking"])]
    assert "waiting for 2 children" in rows[out.short_id(ids["basket"])]
    assert not any(" running " in row for row in rows.values())


def test_runs_lines_say_what_the_machine_waits_for_within_80_columns(waiting):
    rig, ids = waiting
    start, idle = rig.records(ids["asking"])[:2]
    lines = render(out.transition_line(start, idle, "step", "waiting for an event"))
    assert lines == [f"{out.clock_time(idle.time)}  {out.short_id(ids['asking'])}  asked --start--> asked  "
                     "waiting for an event"]
    start, timer = rig.records(ids["timed"])[:2]
    due = time.strftime("%H:%M:%S", time.localtime(timer.due))
    lines = render(out.transition_line(start, timer, "step", f"waiting until {due}"))
    assert lines == [f"{out.clock_time(timer.time)}  {out.short_id(ids['timed'])}  a --start--> a  next: go  "
                     f"waiting until {due}"]


def fails(context, obj):
    raise RuntimeError("the gateway is down")


def test_worker_once_tells_timers_from_retries_in_the_due_time_store(rig_factory):
    failing = {"name": "failing", "states": [
        {"name": "a", "initial": True, "do_action": f"{HERE}.fails", "transitions": [{"event": "go", "target": "b"}]},
        {"name": "b", "final": True}]}
    rig = rig_factory([*machines(), failing])
    store = rig.services.retries
    assert scheduled_line(store, rig.clock()) is None
    rig.engine.start("timed", {})
    rig.engine.start("timed", {})
    rig.engine.handle(rig.next_batch())
    due = rig.clock() + 3600
    when = time.strftime("%H:%M:%S", time.localtime(due))
    assert scheduled_line(store, rig.clock()) == f"2 timers waiting, next due in 3600.0s ({when})"
    rig.engine.start("failing", {})
    rig.engine.handle(rig.next_batch())
    (retry,) = [r for r in store.scheduled() if r.due < due]
    retry_when = time.strftime("%H:%M:%S", time.localtime(retry.due))
    assert scheduled_line(store, rig.clock()) == (
        f"2 timers and 1 retry waiting, next due in {retry.due - rig.clock():.1f}s ({retry_when})")


class CountingOnly:
    """A due-time store that can count what waits but not list it."""

    def pending(self) -> int:
        return 3

    def next_due(self) -> float | None:
        return 1_000_010.0


def test_a_store_that_can_only_count_says_scheduled_records():
    when = time.strftime("%H:%M:%S", time.localtime(1_000_010.0))
    assert scheduled_line(CountingOnly(), 1_000_000.0) == f"3 scheduled records waiting, next due in 10.0s ({when})"
    assert scheduled_line(object(), 1_000_000.0) is None


def test_status_ids_line_names_a_children_wait_and_an_event_wait_apart(waiting):
    rig, ids = waiting
    assert waiting_line(rig.engine.status(ids["basket"])) == (
        "waiting for 2 children in state 'joining' (`fsmlog history ID` lists them)")
    assert waiting_line(rig.engine.status(ids["asking"])) == (
        "waiting for an event in state 'asked' (`fsmlog send ID EVENT`)")
