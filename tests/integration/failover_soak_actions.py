"""The failover soak's action (see test_failover_soak.py and failover_soak_fsm.yaml).

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
    }
    _write(path, {"event": "start", **base, "t": time.time()})
    time.sleep(pause_s(context.correlation_id, context.steps))
    _write(path, {"event": "end", **base, "t": time.time()})
    return None if context.current_state == FINAL_STATE else "next"
