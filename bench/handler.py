"""Lambda handler cost: per-record time through ``handle_kinesis_event`` and the cold import of ``handlers``.

- ``handler_us_per_record``: decode -> dispatch -> append for RECORDS start records in Kinesis-shaped
  batches of BATCH (no-op actions, embedded backend in a temp dir), wall time / records.
- ``handler_import_ms``: ``import handlers`` in a fresh interpreter with boto3 imported first (so boto3's
  own import, which a Lambda pays anyway, is excluded); median of IMPORT_RUNS.
  ``kinesis_trigger_import_ms``: the same for ``handlers.triggers.kinesis`` (engine included), which the
  first invocation imports.

Prints one JSON object.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECORDS = int(os.environ.get("BENCH_RECORDS", "5000"))
BATCH = 100
IMPORT_RUNS = 7


def noop(context, obj):
    return None


def per_record_us() -> float:
    from eventlog.codec import encode
    from eventlog.event import START, Event
    from eventlog.settings import SOURCES, load_settings
    from handlers import handle_kinesis_event
    from handlers.triggers import runtime
    from projections.definition import from_dict

    definitions = from_dict({"machines": [{"name": "bench", "states": [
        {"name": "a", "initial": True, "do_action": "bench.handler.noop", "transitions": [{"event": "x", "target": "b"}]},
        {"name": "b", "final": True},
    ]}]})
    mhash = definitions.machine("bench").hash
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        settings = load_settings({}, **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES})
        engine = runtime.build_engine(settings, definitions)
        import logging

        logging.getLogger("fsmlog.step").setLevel(logging.WARNING)  # measure the handler, not stderr
        events = []
        seq = 0
        for start in range(0, RECORDS, BATCH):
            records = []
            for _ in range(min(BATCH, RECORDS - start)):
                seq += 1
                cid = uuid.uuid4().hex
                data = encode(Event.create(START, cid, "bench", mhash, 0, 0, "a", None, time.time(), {"n": seq}))
                records.append({
                    "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": cid, "sequenceNumber": str(seq),
                                "data": base64.b64encode(data).decode("ascii"), "approximateArrivalTimestamp": 1.0},
                    "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"shardId-000000000000:{seq}",
                    "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::123456789012:role/b",
                    "awsRegion": "us-east-1", "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/b",
                })
            events.append({"Records": records})
        t0 = time.perf_counter()
        for event in events:
            response = handle_kinesis_event(event, engine)
            if response["batchItemFailures"]:
                raise SystemExit(f"benchmark batch failed: {response}")
        elapsed = time.perf_counter() - t0
        runtime.reset(close=False)
        engine.services.close()
    return elapsed / RECORDS * 1e6


def import_ms(module: str = "handlers") -> float:
    code = f"import boto3, time; t = time.perf_counter(); import {module}; print((time.perf_counter() - t) * 1000)"
    runs = []
    for _ in range(IMPORT_RUNS):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        runs.append(float(out.stdout.strip()))
    return statistics.median(runs)


def main() -> None:
    print(json.dumps({
        "handler_us_per_record": round(per_record_us(), 1),
        "handler_import_ms": round(import_ms(), 3),
        # what the first invocation adds: the router, the Kinesis trigger and the engine
        "kinesis_trigger_import_ms": round(import_ms("handlers.triggers.kinesis"), 3),
        "records": RECORDS,
        "batch": BATCH,
    }))


if __name__ == "__main__":
    main()
