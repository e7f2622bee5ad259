"""The failover soak's actions (see test_failover_soak.py and failover_soak_fsm.yaml).

Every execution of a step appends two JSON lines to the journal file named by the
``FAILOVER_SOAK_JOURNAL`` environment variable: ``start`` at the action's entry and
``end`` just before it returns. Each line is one ``write`` on a descriptor opened with
``O_APPEND``, so the lines of concurrent worker processes never interleave:

    {"event": "start"|"end", "eid": ..., "pid": ..., "cid": ..., "steps": ..., "retries": ...,
     "state": ..., "token": obj["fence_token"], "owner": obj["lease_owner"], "t": time.time()}

``eid`` pairs an execution's start and end. Between them the action sleeps 0, 0.1, 0.2
or 0.3 s, chosen from the machine and step (the same on every re-execution), so
executions have a width that a second holder of the same machine would overlap.
The action does nothing else: it never fails by itself, so any re-execution the soak
sees comes from the engine.

The waiting machine (``failover_soak_waits``) journals one action per step the same way, with
``tag`` (which action: w0, w1, w2, expire, w4) and, at w4, ``send`` (which of the soak's two sends
of the event is being applied: they share an event_id and differ only in that tag). Each action
appends its tag to ``context["trail"]``, and w4 appends the event's data to ``context["applied"]``:
a step applied twice in sequence shows twice there. w1 sets ``additional_delay_seconds``.

The fan-out machine (``failover_soak_children``) journals p0 (which starts CHILDREN children of
``failover_soak_child``), p1 (entering its ``wait: children`` state) and p2 (on ``children_done``,
with how many children it was handed); each child journals its two steps.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import zlib
from typing import Any

JOURNAL_ENV = "FAILOVER_SOAK_JOURNAL"
FINAL_STATE = "s4"
PAUSES_S = (0.0, 0.1, 0.2, 0.3)


def pause_s(cid: str, steps: int) -> float:
    return PAUSES_S[zlib.crc32(f"{cid}:{steps}".encode()) % len(PAUSES_S)]


def _write(path: str, entry: dict[str, Any]) -> None:
    line = (json.dumps(entry, separators=(",", ":"), default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write per line: O_APPEND keeps concurrent writers' lines whole
    finally:
        os.close(fd)


def step(context: Any, obj: dict[str, Any]) -> str | None:
    _journaled(context, obj, {})
    return None if context.current_state == FINAL_STATE else "next"


def _journaled(context: Any, obj: dict[str, Any], extra: dict[str, Any]) -> None:
    """One execution: its ``start`` line, the pause, its ``end`` line."""
    path = os.environ.get(JOURNAL_ENV)
    if not path:
        raise RuntimeError(f"{JOURNAL_ENV} is not set: the soak's workers must name the journal file")
    base = {
        "eid": uuid.uuid4().hex,
        "pid": os.getpid(),
        "cid": context.correlation_id,
        "steps": context.steps,
        "retries": context.retries,
        "state": context.current_state,
        "token": obj.get("fence_token"),
        "owner": obj.get("lease_owner"),
        **extra,
    }
    _write(path, {"event": "start", **base, "t": time.time()})
    time.sleep(pause_s(context.correlation_id, context.steps))
    _write(path, {"event": "end", **base, "t": time.time()})


# ------------------------------------------------------------------ the waiting machine

WAIT_FINAL_STATE = "w4"
ADDED_DELAY_S = 0.5  # w1's additional_delay_seconds (the soak checks the step after it against it)
TRAIL = "trail"
APPLIED = "applied"


def _waited(context: Any, obj: dict[str, Any], tag: str) -> None:
    extra: dict[str, Any] = {"tag": tag}
    data = context.get("event_data")
    if tag == WAIT_FINAL_STATE:
        extra["send"] = data.get("send") if isinstance(data, dict) else None
    _journaled(context, obj, extra)
    context[TRAIL] = [*context.get(TRAIL, []), tag]
    if tag == WAIT_FINAL_STATE:
        context[APPLIED] = [*context.get(APPLIED, []), data]


def wait_step(context: Any, obj: dict[str, Any]) -> str | None:
    """The do action of w0, w1 and w4."""
    state = context.current_state
    _waited(context, obj, state)
    if state == "w1":
        context.additional_delay_seconds = ADDED_DELAY_S
    return None if state == WAIT_FINAL_STATE else "next"


def wait_enter(context: Any, obj: dict[str, Any]) -> None:
    """w2's entry action (a wait state runs no do action)."""
    _waited(context, obj, "w2")


def wait_fired(context: Any, obj: dict[str, Any]) -> None:
    """The action of w2's ``expire`` transition: its timeout fired."""
    _waited(context, obj, "expire")


# ------------------------------------------------------------------ fan-out / fan-in

CHILD_MACHINE = "failover_soak_child"
CHILDREN = 3  # started by each parent's p0


def fan_out(context: Any, obj: dict[str, Any]) -> str:
    """p0: start the children (a re-run starts the same ones: their ids come from the step's key)."""
    _waited(context, obj, "p0")
    obj["children"].start(CHILD_MACHINE, [{"k": k} for k in range(CHILDREN)])
    return "next"


def fan_wait(context: Any, obj: dict[str, Any]) -> None:
    """p1's entry action (a ``wait: children`` state runs no do action)."""
    _waited(context, obj, "p1")


def fan_in(context: Any, obj: dict[str, Any]) -> None:
    """p2, on ``children_done``: journals how many children it was handed."""
    children = context.get("children")
    _journaled(context, obj, {"tag": "p2", "children": len(children) if isinstance(children, list) else None})
    context[TRAIL] = [*context.get(TRAIL, []), "p2"]


def child_step(context: Any, obj: dict[str, Any]) -> str | None:
    _journaled(context, obj, {"tag": context.current_state})
    return "next" if context.current_state == "c0" else None
