"""Throughput of the embedded backend: 1,000 machines x 10 steps, no-op actions, one local worker.

Prints ONE JSON object: ``transitions_per_s`` from a plain timed run, and from a
second, profiled run (cProfile, aggregated by function) the microseconds per
transition spent in each phase of a step, plus how many SQLite transactions and
statements each transition costs. Profiled times carry cProfile's overhead;
compare phases with each other, not with the plain run.

    .venv/bin/python bench/embedded.py [--machines N] [--steps N] [--batch N]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for entry in (str(HERE.parent), str(HERE)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from eventlog.settings import SOURCES, load_settings  # noqa: E402
from handlers.engine import Engine  # noqa: E402
from handlers.wiring import open_services  # noqa: E402
from handlers.worker import Worker  # noqa: E402
from projections.definition import from_dict  # noqa: E402

TARGET = 2000.0


def advance(context, obj):
    """The no-op action: just the next event."""
    return "next"


def definition(steps: int) -> dict:
    # steps handled records per machine: the start, steps-1 step records, then the final transition
    states = [{"name": f"s{i}", "initial": i == 0, "do_action": "embedded.advance",
               "transitions": [{"event": "next", "target": f"s{i + 1}"}]} for i in range(steps - 1)]
    states.append({"name": f"s{steps - 1}", "final": True})
    return {"machines": [{"name": "bench", "states": states}]}


def run_once(db: Path, machines: int, steps: int, batch: int, profile: cProfile.Profile | None) -> dict:
    url = f"sqlite:///{db}"
    settings = load_settings(environ={}, **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES})
    services = open_services(settings)
    engine = Engine(from_dict({**definition(steps)}), services, settings)
    for start in range(0, machines, 1000):
        engine.start_many("bench", [{"i": i} for i in range(start, min(machines, start + 1000))])
    worker = Worker(engine, services.log, batch_size=batch, poll_s=0.0)
    consumer = worker.consumer
    began = time.perf_counter()
    if profile is not None:
        profile.enable()
    worker.run(until=lambda: services.log.drained(consumer))
    if profile is not None:
        profile.disable()
    elapsed = time.perf_counter() - began
    totals = services.metrics.read()
    transitions = int(sum(v for (name, _), v in totals.items() if name == "Transitions"))
    completed = int(sum(v for (name, _), v in totals.items() if name == "MachinesCompleted"))
    services.close()
    return {"elapsed_s": elapsed, "transitions": transitions, "completed": completed,
            "batches": worker.stats.batches}


# phase -> (file suffix, function name) whose cumulative time is the phase's
PHASES = {
    "claim": [("eventlog/backends/sqlite.py", "claim_batch"), ("eventlog/backends/sqlite.py", "complete_claim"),
              ("eventlog/backends/sqlite.py", "drained")],
    "trigger_shaping": [("handlers/worker.py", "kinesis_record"), ("handlers/triggers/kinesis.py", "item")],
    "decode": [("handlers/engine.py", "_parse")],
    "lease_gate": [("handlers/gate.py", "begin"), ("handlers/gate.py", "begin_many")],
    "actions": [("bench/embedded.py", "advance")],
    "encode": [("handlers/engine.py", "_record"), ("handlers/engine.py", "_set_out")],
    "append": [("eventlog/backends/sqlite.py", "append")],
    "mark_release": [("handlers/gate.py", "end"), ("handlers/gate.py", "end_many")],
    "snapshot": [("handlers/engine.py", "_save_snapshot")],
    "metrics": [("handlers/engine.py", "flush_metrics")],
    "retry_timer": [("handlers/engine.py", "run_due_retries")],
}


def breakdown(profile: cProfile.Profile, transitions: int) -> dict:
    stats = pstats.Stats(profile).stats  # (file, line, func) -> (cc, nc, tt, ct, callers)
    by_func: dict[tuple[str, str], tuple[int, float]] = {}
    total = 0.0
    for (filename, _line, func), (_cc, nc, _tt, ct, _callers) in stats.items():
        path = filename.replace(os.sep, "/")
        for suffix, name in (s for spec in PHASES.values() for s in spec):
            if func == name and path.endswith(suffix):
                calls, cum = by_func.get((suffix, name), (0, 0.0))
                by_func[(suffix, name)] = (calls + nc, cum + ct)
        if func == "run" and path.endswith("handlers/worker.py"):
            total = max(total, ct)

    def calls_of(func: str, suffix: str) -> int:
        return sum(nc for (f, _l, fn), (_cc, nc, *_rest) in stats.items()
                   if fn == func and f.replace(os.sep, "/").endswith(suffix))

    us = {phase: round(sum(by_func.get(s, (0, 0.0))[1] for s in spec) / transitions * 1e6, 2)
          for phase, spec in PHASES.items()}
    us["other"] = round(total / transitions * 1e6 - sum(us.values()), 2)
    return {
        "us_per_transition": us,
        "profiled_total_us_per_transition": round(total / transitions * 1e6, 2),
        "sqlite_transactions_per_transition": round(calls_of("transaction", "eventlog/embedded.py") / transitions, 2),
        # single statements outside transaction(): each one is its own implicit commit when it writes
        "sqlite_autocommit_statements_per_transition": round(
            calls_of("execute", "eventlog/embedded.py") / transitions, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fsmlog-bench-") as tmp:
        plain = run_once(Path(tmp) / "plain.db", args.machines, args.steps, args.batch, None)
        profile = cProfile.Profile()
        profiled = run_once(Path(tmp) / "profiled.db", args.machines, args.steps, args.batch, profile)
    tps = plain["transitions"] / plain["elapsed_s"]
    result = {
        "benchmark": "embedded",
        "machines": args.machines,
        "steps_per_machine": args.steps,
        "batch_size": args.batch,
        "transitions": plain["transitions"],
        "machines_completed": plain["completed"],
        "elapsed_s": round(plain["elapsed_s"], 3),
        "transitions_per_s": round(tps, 1),
        "target_transitions_per_s": TARGET,
        "meets_target": tps >= TARGET,
        "us_per_transition": round(1e6 / tps, 1),
        "batches": plain["batches"],
        "profile": breakdown(profile, profiled["transitions"]),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
