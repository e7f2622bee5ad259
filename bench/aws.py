"""AWS cost of the happy path: 200 machines x 10 steps, no-op actions, every source on AWS (moto's server).

Kinesis stream; DynamoDB checkpoints, retries, cache, environment and dead letters;
CloudWatch metrics. moto's ``ThreadedMotoServer`` runs in this process on
127.0.0.1 (a free port) and ``ENDPOINTS`` maps every ARN to it, so every call
is real HTTP through boto3. Records reach the engine the way Lambda delivers
them: the local dev loop's Kinesis poller reads each shard with GetRecords
(up to BATCH records a read) and hands ``handle_kinesis_event`` a Lambda-shaped
event; batchItemFailures are honoured.

Prints ONE JSON object:

- ``transitions_per_s``: transitions / wall time of the run (moto's latency dominates);
- ``api_calls_per_transition``: the calls fsmlog itself makes (all services), from
  ``eventlog.aws.API_CALLS`` deltas over the run, resource creation excluded;
- ``driver_calls_per_transition``: the reads of the stream (ListShards, GetShardIterator,
  GetRecords), which on Lambda the event source mapping makes, not fsmlog;
- ``calls_by_operation``: ``{"kinesis.PutRecords": n, ...}`` for the run, both kinds;
- ``bytes_per_record``: mean size of the encoded records the run appended.

    .venv/bin/python bench/aws.py [--machines N] [--steps N] [--batch N] [--shards N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # ahead of bench/, whose replay.py would shadow the replay package

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
SNAPSHOT_EVERY = 10
TARGET_CALLS = 3.0  # the aim for api_calls_per_transition
# the calls Lambda's Kinesis event source mapping makes on fsmlog's behalf
DRIVER_OPERATIONS = {("kinesis", "ListShards"), ("kinesis", "GetShardIterator"), ("kinesis", "GetRecords")}


def advance(context, obj):
    """The no-op action: just the next event."""
    return "next"


def definition(steps: int) -> dict:
    """``steps`` handled records per machine: the start, then steps - 1 step records (the last one completes)."""
    states = [{"name": f"s{i}", "initial": i == 0, "do_action": "bench.aws.advance",
               "transitions": [{"event": "next", "target": f"s{i + 1}"}]} for i in range(steps - 1)]
    states.append({"name": f"s{steps - 1}", "final": True})
    return {"machines": [{"name": "bench", "states": states}]}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def arns() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/fsmlog-bench-{tag}-"
    return {
        "PRIMARY_STREAM_SOURCE": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/fsmlog-bench-{tag}",
        "PRIMARY_CHECKPOINT_SOURCE": table + "checkpoints",
        "PRIMARY_RETRY_SOURCE": table + "retries",
        "PRIMARY_CACHE_SOURCE": table + "cache",
        "PRIMARY_ENVIRONMENT_SOURCE": table + "environment",
        "PRIMARY_DEAD_LETTER_SOURCE": table + "dead-letters",
        "PRIMARY_METRICS_SOURCE": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:namespace/fsmlog-bench",
    }


def run(machines: int, steps: int, batch: int, shards: int) -> dict:
    from moto.server import ThreadedMotoServer

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        os.environ[name] = "testing"
    os.environ["AWS_DEFAULT_REGION"] = REGION
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        return _measure(f"http://127.0.0.1:{port}", machines, steps, batch, shards)
    finally:
        server.stop()


def _measure(endpoint: str, machines: int, steps: int, batch: int, shards: int) -> dict:
    from eventlog import aws
    from eventlog.backends.kinesis import KinesisLog
    from eventlog.settings import load_settings
    from fsmlog.resources import create_resources
    from handlers.devloop import DevLoop
    from handlers.triggers import runtime
    from handlers.triggers.kinesis import handle_kinesis_event
    from projections.definition import from_dict

    sources = arns()
    settings = load_settings(
        environ={"AWS_DEFAULT_REGION": REGION},
        ENDPOINTS={arn: endpoint for arn in sources.values()},
        SNAPSHOT_EVERY=SNAPSHOT_EVERY,
        **sources,
    )
    create_resources(settings, shards=shards, sleep=lambda s: time.sleep(min(s, 0.05)))

    completed: set[str] = set()

    def on_step(record, out, outcome: str) -> None:
        if outcome == "completed":
            completed.add(record.correlation_id)

    engine = runtime.build_engine(settings, from_dict(definition(steps)), on_step=on_step)
    logging.getLogger("fsmlog.step").setLevel(logging.WARNING)  # measure the calls, not stderr
    # Lambda-shaped Kinesis events, straight to the Kinesis trigger; no retries happen on the happy
    # path, so the timer (a separate scheduled invocation) is left out
    loop = DevLoop(engine, batch_size=batch, poll_s=0.0, timer_every_s=float("inf"),
                   handler=lambda event, context: handle_kinesis_event(event, engine))

    before = Counter(aws.API_CALLS)
    began = time.perf_counter()
    for first in range(0, machines, 500):
        engine.start_many("bench", [{"i": i} for i in range(first, min(machines, first + 500))])
    finished = loop.run(until=lambda: len(completed) >= machines, timeout_s=1800)
    elapsed = time.perf_counter() - began
    calls = Counter(aws.API_CALLS)
    calls.subtract(before)
    calls = +calls  # drop the zeroes

    # what the run appended, read back after the measurement
    log = KinesisLog(sources["PRIMARY_STREAM_SOURCE"], settings)
    sizes: list[int] = []
    after = None
    while page := log.read(after, 10_000):
        sizes.extend(len(r.data) for r in page)
        after = page[-1].position
    runtime.reset(close=True)

    transitions = machines * steps
    own = sum(n for op, n in calls.items() if op not in DRIVER_OPERATIONS)
    driver = sum(n for op, n in calls.items() if op in DRIVER_OPERATIONS)
    return {
        "transitions_per_s": round(transitions / elapsed, 1),
        "api_calls_per_transition": round(own / transitions, 3),
        "driver_calls_per_transition": round(driver / transitions, 3),
        "calls_by_operation": {f"{svc}.{op}": n for (svc, op), n in sorted(calls.items())},
        "bytes_per_record": round(sum(sizes) / len(sizes), 1) if sizes else 0.0,
        "records": len(sizes),
        "machines": machines,
        "steps": steps,
        "transitions": transitions,
        "completed": len(completed),
        "finished": finished,
        "batch": batch,
        "shards": shards,
        "snapshot_every": SNAPSHOT_EVERY,
        "invocations": loop.stats.invocations,
        "failed_items": loop.stats.failed_items,
        "elapsed_s": round(elapsed, 2),
        "target_api_calls_per_transition": TARGET_CALLS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100, help="records per GetRecords (Lambda's batch size)")
    parser.add_argument("--shards", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(run(args.machines, args.steps, args.batch, args.shards)))


if __name__ == "__main__":
    main()
