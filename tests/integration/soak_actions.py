"""The chaos soak's action (see test_chaos_soak.py and soak_fsm.yaml).

Every step, in this order:

1. counts an attempt of its idempotency key (one more row per execution of the action);
2. touches the environment store (``obj["environment"]``, over the engine's chaos-wrapped
   service): the first step keeps a dict there, later steps read it back; an injected fault
   there is the action's failure, so the engine schedules a retry;
3. applies its side effect once: ``INSERT OR IGNORE`` of a row keyed by the idempotency
   key and, only when that row is new, ``+1`` on the machine's running total, in one
   transaction. The total is not idempotent by itself: if a step's effect were applied
   twice, the total would say so.

The step also counts in the user context (``n``), so the machine's final record tells
whether the log saw every step exactly once.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (key TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, machine TEXT NOT NULL, step INTEGER NOT NULL,
                                    fence_token INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS totals (machine TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""


class _Target:
    """Where the action writes: set by the test before any machine runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: sqlite3.Connection | None = None


_target = _Target()


def configure(effects_db: str) -> None:
    """Point the action at the test's effects file."""
    conn = sqlite3.connect(effects_db, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    with _target.lock:
        old, _target.conn = _target.conn, conn
    if old is not None:
        old.close()


def reset() -> None:
    with _target.lock:
        old, _target.conn = _target.conn, None
    if old is not None:
        old.close()


def payload(correlation_id: str) -> dict[str, Any]:
    return {"machine": correlation_id, "blob": "x" * 512}


def _environment_id(correlation_id: str) -> str:
    return f"soak:{correlation_id}"


def step(context: Any, obj: dict[str, Any]) -> str | None:
    key = obj["idempotency_key"]
    cid = context.correlation_id
    steps = context.steps
    conn = _target.conn
    if conn is None:
        raise RuntimeError("soak_actions.configure() was not called")
    with _target.lock:
        conn.execute("INSERT INTO attempts (key, n) VALUES (?, 1) ON CONFLICT (key) DO UPDATE SET n = n + 1",
                     (key,))
    env = obj["environment"]
    if steps == 0:
        env.put(_environment_id(cid), payload(cid))  # a retry puts the same dict again
    else:
        found = env.get(_environment_id(cid))
        if found != payload(cid):
            raise RuntimeError(f"environment of {cid} holds {found!r}, not what step 0 put there")
    with _target.lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            new = conn.execute(
                "INSERT OR IGNORE INTO effects (key, machine, step, fence_token) VALUES (?, ?, ?, ?)",
                (key, cid, steps, obj["fence_token"]),
            ).rowcount
            if new:
                conn.execute("INSERT INTO totals (machine, n) VALUES (?, 1) "
                             "ON CONFLICT (machine) DO UPDATE SET n = n + 1", (cid,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    context["n"] = int(context.get("n", 0)) + 1
    return None if context.current_state == "s9" else "next"
