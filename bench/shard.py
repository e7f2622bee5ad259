"""One Kinesis shard, one Lambda invocation at a time: round trips per batch, throughput, and what it costs.

moto's server runs in a child process (its own interpreter, so its CPU is not ours) behind a
WSGI layer that sleeps ``--latency-ms`` before every request: the network and service time a
call costs on AWS. Every source is on it: a one-shard Kinesis stream, DynamoDB checkpoints,
retries, cache, environment and dead letters; metrics go to EMF (``emf:``, the template's
default: zero calls) unless ``--metrics cloudwatch``. N machines x S steps (no-op actions) are
started at once; the dev loop's Kinesis poller reads the shard with GetRecords (``--batch``
records a read) and hands ``handle_kinesis_event`` the event Lambda builds, one invocation at a
time, as Lambda does for one shard with ParallelizationFactor 1.

Every boto3 call is timed (botocore's ``before-parameter-build`` / ``after-call`` events, wall
clock and the calling thread's CPU). Prints ONE JSON object:

- ``transitions_per_s``: transitions / wall time of the run, measured on moto (bound by moto's
  own speed: see ``emulator_calls_per_s``);
- ``round_trips_per_batch``: per invocation, the longest chain of calls each starting after the
  previous one ended (calls that overlap are one round trip; 100 calls on 16 threads are a chain
  of 7), measured from the calls' start and end times; mean over invocations (``_max`` the
  worst; ``_merged`` counts stretches with any call in flight instead, a lower bound that a
  16-thread pool's waves hide from); ``critical_path`` names the engine phase each link of the
  chain belongs to (mean links per batch), ``phase_ms_per_batch`` the wall time each phase spans;
- ``cpu_ms_per_batch``: this process's CPU time per invocation (engine + boto3 client; moto's
  is in the child), ``client_cpu_ms_per_batch`` the part spent inside AWS calls (boto3, or the step path's own DynamoDB client);
- ``modelled_transitions_per_s``: batch size / (round trips x latency + CPU per batch), both
  measured: what one invocation on a real shard would move, were every call ``--latency-ms``
  (MODELLED, not measured; 0 ms latency gives the CPU-bound figure);
- ``emulator_calls_per_s``: moto's ceiling for conditional UpdateItem calls with 16 in flight
  (``_sequential``: one at a time), measured in the same run right after it, with the same
  latency; ``emulator_transitions_per_s_ceiling`` = that / DynamoDB calls per transition;
- ``api_calls_per_transition`` (fsmlog's own calls; the stream reads the event source mapping
  makes are ``driver_calls_per_transition``), ``write_units_per_transition`` (DynamoDB write
  request units: 1 per KB of item per write, a failed condition included, transactional items
  counted twice), ``read_units_per_transition``, ``kinesis_payload_units_per_transition``;
- ``usd_per_million_transitions``: the counted calls and units x the on-demand list prices in
  :data:`PRICES` (DynamoDB writes and reads, Kinesis PUT payload units, CloudWatch requests and
  EMF log bytes, Lambda requests and GB-seconds at the measured mean invocation duration and
  ``--memory-mb``); ``usd_breakdown`` per item; ``usd_per_million_transitions_modelled_duration``
  the same with the modelled duration instead of moto's, its CPU part stretched by the vCPU share
  Lambda gives ``--memory-mb`` (a full vCPU at 1,769 MB).

    .venv/bin/python bench/shard.py [--latency-ms 10] [--machines 200] [--steps 10] [--batch 100]
                                    [--metrics emf|cloudwatch] [--memory-mb 512] [--probe-s 3]
                                    [--server keepalive|werkzeug]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # ahead of bench/, whose replay.py would shadow the replay package

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
SNAPSHOT_EVERY = 10
PROBE_THREADS = 16
FULL_VCPU_MB = 1769  # Lambda gives a function one full vCPU at this memory size, a proportional share below it
# the calls Lambda's Kinesis event source mapping makes on fsmlog's behalf (no per-call charge)
DRIVER_OPERATIONS = {("kinesis", "ListShards"), ("kinesis", "GetShardIterator"), ("kinesis", "GetRecords")}

# On-demand list prices, us-east-1, as published on the services' pricing pages (checked 2025-06;
# DynamoDB on-demand after its 2024-11-01 cut). Fixed monthly charges (shard-hours, stored GB,
# custom metrics) do not scale with transitions and are left out.
PRICES_DATE = "2025-06"
PRICES = {
    "dynamodb_write_request_unit": 0.625 / 1e6,  # per WRU (1 KB of item written; transactional: 2)
    "dynamodb_read_request_unit": 0.125 / 1e6,  # per RRU (4 KB read strongly consistent)
    "kinesis_put_payload_unit": 0.014 / 1e6,  # per 25 KB PUT payload unit (provisioned mode)
    "cloudwatch_request": 0.01 / 1e3,  # PutMetricData, per request
    "cloudwatch_logs_ingested_gb": 0.50,  # EMF lines are log data, per GB ingested
    "lambda_request": 0.20 / 1e6,  # per invocation
    "lambda_gb_second": 0.0000166667,  # x86, per GB-second of billed duration (1 ms granularity)
}

# The children: moto's app behind a layer that sleeps the modelled latency (argv[1], ms) before each
# request, served by Hypercorn, which keeps connections alive as AWS's endpoints do (``--server
# werkzeug``: moto's own server, which closes every connection, so each call also pays a TCP connect
# AWS does not charge).
CHILD_APP = r"""
import logging, sys, time
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

latency = float(sys.argv[1]) / 1000.0
app = DomainDispatcherApplication(create_backend_app)

def delayed(environ, start_response):
    if latency > 0:
        time.sleep(latency)
    return app(environ, start_response)
"""

CHILD_KEEPALIVE = CHILD_APP + r"""
import asyncio, socket
from concurrent.futures import ThreadPoolExecutor
from hypercorn.asyncio import serve
from hypercorn.config import Config

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(1024)
config = Config()
config.bind = [f"fd://{sock.fileno()}"]
config.accesslog = None
config.loglevel = "ERROR"
config.keep_alive_timeout = 300
config.backlog = 1024

async def main():
    # WSGI calls run on the loop's default executor: enough threads that every request sleeps at once
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(256))
    print(sock.getsockname()[1], flush=True)
    await serve(delayed, config, mode="wsgi")

asyncio.run(main())
"""

CHILD = CHILD_APP + r"""
from werkzeug.serving import make_server

logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = make_server("127.0.0.1", 0, delayed, threaded=True, request_handler=MotoRequestHandler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def advance(context, obj):
    """The no-op action: just the next event."""
    return "next"


def definition(steps: int) -> dict:
    """``steps`` handled records per machine: the start, then steps - 1 step records (the last one completes)."""
    states = [{"name": f"s{i}", "initial": i == 0, "do_action": "bench.shard.advance",
               "transitions": [{"event": "next", "target": f"s{i + 1}"}]} for i in range(steps - 1)]
    states.append({"name": f"s{steps - 1}", "final": True})
    return {"machines": [{"name": "bench", "states": states}]}


def arns(metrics: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/fsmlog-shard-{tag}-"
    return {
        "PRIMARY_STREAM_SOURCE": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/fsmlog-shard-{tag}",
        "PRIMARY_CHECKPOINT_SOURCE": table + "checkpoints",
        "PRIMARY_RETRY_SOURCE": table + "retries",
        "PRIMARY_CACHE_SOURCE": table + "cache",
        "PRIMARY_ENVIRONMENT_SOURCE": table + "environment",
        "PRIMARY_DEAD_LETTER_SOURCE": table + "dead-letters",
        "PRIMARY_METRICS_SOURCE": (f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:namespace/fsmlog-shard"
                                   if metrics == "cloudwatch" else "emf:fsmlog-shard"),
    }


# ---------------------------------------------------------------- the emulator


class Emulator:
    """moto's server in a child interpreter, every request delayed by ``latency_ms``."""

    def __init__(self, latency_ms: float, server: str = "keepalive") -> None:
        child = CHILD_KEEPALIVE if server == "keepalive" else CHILD
        self.proc = subprocess.Popen([sys.executable, "-c", child, str(latency_ms)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip() if self.proc.stdout else ""
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"moto's server did not start (it said {line!r})")
        self.url = f"http://127.0.0.1:{line}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------- timing every call


@dataclass
class Call:
    start: float
    end: float
    service: str
    op: str
    cpu: float  # the calling thread's CPU time inside the call (boto3: build, sign, send, parse)


@dataclass
class Invocation:
    records: int
    start: float = 0.0
    end: float = 0.0
    cpu: float = 0.0  # process CPU time
    calls: list[Call] = field(default_factory=list)
    phases: list[tuple[float, float, str]] = field(default_factory=list)


class Recorder:
    """botocore event hooks on every client: times each call and counts the units it bills."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: Invocation | None = None
        self.counting = False
        self.calls: Counter = Counter()  # (service, op) -> calls while counting
        self.driver: Counter = Counter()  # the part the event source mapping made (stream reads between invocations)
        self.units: Counter = Counter()  # billing units while counting (own calls only)
        self.hooked: set[int] = set()

    def hook(self, client: Any, service: str) -> None:
        if id(client) in self.hooked:
            return
        self.hooked.add(id(client))
        client.meta.events.register("before-parameter-build", self._before)
        client.meta.events.register("after-call", self._after)
        client.meta.events.register("after-call-error", self._after)

    def _before(self, params: dict, model: Any, context: dict, **_: Any) -> None:
        context["_bench"] = (time.perf_counter(), time.thread_time())
        service = model.service_model.service_name
        if self.counting and (service, model.name) not in DRIVER_OPERATIONS:
            with self.lock:
                for unit, n in billed(service, model.name, params).items():
                    self.units[unit] += n

    def _after(self, model: Any, context: dict, **_: Any) -> None:
        stamp = context.get("_bench")
        if stamp is None:
            return
        end, cpu = time.perf_counter(), time.thread_time()
        service = model.service_model.service_name
        with self.lock:
            inv = self.current
            if self.counting:
                self.calls[(service, model.name)] += 1
                if inv is None and (service, model.name) in DRIVER_OPERATIONS:
                    self.driver[(service, model.name)] += 1
            if inv is not None:
                inv.calls.append(Call(stamp[0], end, service, model.name, cpu - stamp[1]))

    def wire(self, op: str, params: dict, start: float, end: float, cpu: float) -> None:
        """A call made by eventlog.dynamodb_wire (the step path's DynamoDB client, no botocore events)."""
        with self.lock:
            inv = self.current
            if self.counting:
                self.calls[("dynamodb", op)] += 1
                for unit, n in billed("dynamodb", op, params).items():
                    self.units[unit] += n
            if inv is not None:
                inv.calls.append(Call(start, end, "dynamodb", op, cpu))

    def phase(self, name: str, fn: Any) -> Any:
        """``fn`` wrapped to record its interval as phase ``name`` of the current invocation."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                inv = self.current
                if inv is not None:
                    with self.lock:
                        inv.phases.append((t0, time.perf_counter(), name))

        return timed


def _size(value: dict) -> int:
    """Bytes DynamoDB bills for one attribute value (close enough for small items)."""
    (kind, v), = value.items()
    if kind in ("S", "N"):
        return len(str(v).encode())
    if kind == "B":
        return len(v)
    if kind == "M":
        return 3 + sum(len(k) + _size(x) + 1 for k, x in v.items())
    if kind == "L":
        return 3 + sum(_size(x) + 1 for x in v)
    if kind in ("SS", "NS"):
        return sum(len(str(x).encode()) for x in v)
    if kind == "BS":
        return sum(len(x) for x in v)
    return 1


def _item_kb(item: dict) -> int:
    return max(1, math.ceil(sum(len(k) + _size(v) for k, v in item.items()) / 1024))


def billed(service: str, op: str, params: dict) -> Counter:
    """The billing units one call costs, from its parameters."""
    out: Counter = Counter()
    if service == "dynamodb":
        if op == "PutItem":
            out["dynamodb_write_request_unit"] += _item_kb(params.get("Item", {}))
        elif op in ("UpdateItem", "DeleteItem"):
            out["dynamodb_write_request_unit"] += 1  # fsmlog's lease/mark/retry items are far below 1 KB
        elif op == "BatchWriteItem":
            for requests in params.get("RequestItems", {}).values():
                for r in requests:
                    put = r.get("PutRequest")
                    out["dynamodb_write_request_unit"] += _item_kb(put["Item"]) if put else 1
        elif op == "TransactWriteItems":
            for entry in params.get("TransactItems", []):
                (kind, body), = entry.items()
                out["dynamodb_write_request_unit"] += 2 * (_item_kb(body["Item"]) if kind == "Put" else 1)
        elif op == "GetItem":
            out["dynamodb_read_request_unit"] += 1 if params.get("ConsistentRead") else 0.5
        elif op == "BatchGetItem":
            for spec in params.get("RequestItems", {}).values():
                out["dynamodb_read_request_unit"] += len(spec.get("Keys", [])) * (
                    1 if spec.get("ConsistentRead") else 0.5)
        elif op in ("Query", "Scan"):
            out["dynamodb_read_request_unit"] += 1  # at least one; the happy path makes none
    elif service == "kinesis":
        if op == "PutRecords":
            for r in params.get("Records", []):
                out["kinesis_put_payload_unit"] += max(1, math.ceil(
                    (len(r.get("Data", b"")) + len(r.get("PartitionKey", "").encode())) / (25 * 1024)))
        elif op == "PutRecord":
            out["kinesis_put_payload_unit"] += max(1, math.ceil(len(params.get("Data", b"")) / (25 * 1024)))
    elif service == "cloudwatch" and op == "PutMetricData":
        out["cloudwatch_request"] += 1
    return out


def longest_chain(calls: list[Call]) -> list[Call]:
    """The longest sequence of calls each starting after the previous one ended."""
    ordered = sorted(calls, key=lambda c: c.start)
    best: list[int] = []
    back: list[int] = []
    for i, c in enumerate(ordered):
        length, prev = 1, -1
        for j in range(i):
            if ordered[j].end <= c.start and best[j] + 1 > length:
                length, prev = best[j] + 1, j
        best.append(length)
        back.append(prev)
    if not ordered:
        return []
    i = max(range(len(ordered)), key=best.__getitem__)
    chain = []
    while i >= 0:
        chain.append(ordered[i])
        i = back[i]
    return chain[::-1]


def phase_of(call: Call, phases: list[tuple[float, float, str]]) -> str:
    """The innermost recorded engine phase the call started in."""
    inside = [p for p in phases if p[0] <= call.start <= p[1]]
    if not inside:
        return f"other ({call.service}.{call.op})"
    return min(inside, key=lambda p: p[1] - p[0])[2]


def _merged(calls: list[Call]) -> int:
    """Stretches of time with a call in flight (overlapping calls merged): a lower bound on round trips."""
    count, end = 0, float("-inf")
    for c in sorted(calls, key=lambda c: c.start):
        if c.start > end:
            count += 1
        end = max(end, c.end)
    return count


def _by_name(phases: list[tuple[float, float, str]]) -> dict[str, list[tuple[float, float]]]:
    out: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
    for t0, t1, name in phases:
        out[name].append((t0, t1))
    return out


def _union(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by the spans (concurrent ones counted once)."""
    total, end = 0.0, float("-inf")
    for t0, t1 in sorted(spans):
        if t1 > end:
            total += t1 - max(t0, end)
            end = t1
    return total


class _Counting(io.TextIOBase):
    """Where the EMF lines go during the run: counted (they are log bytes Lambda ships), not printed."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, s: str) -> int:
        self.bytes += len(s.encode())
        return len(s)


# ---------------------------------------------------------------- the run


def run(machines: int, steps: int, batch: int, latency_ms: float, metrics: str, memory_mb: int,
        probe_s: float, server: str = "keepalive") -> dict:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        os.environ[name] = "testing"
    os.environ["AWS_DEFAULT_REGION"] = REGION
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_LAMBDA_FUNCTION_NAME"):
        os.environ.pop(name, None)
    emulator = Emulator(latency_ms, server)
    try:
        return {"server": server, **_measure(emulator.url, machines, steps, batch, latency_ms, metrics, memory_mb,
                                              probe_s)}
    finally:
        emulator.stop()


def _measure(endpoint: str, machines: int, steps: int, batch: int, latency_ms: float, metrics: str,
             memory_mb: int, probe_s: float) -> dict:
    from eventlog import aws, dynamodb_wire
    from eventlog.settings import load_settings
    from fsmlog.resources import create_resources
    from handlers.devloop import DevLoop
    from handlers.triggers import runtime
    from handlers.triggers.kinesis import handle_kinesis_event
    from projections.definition import from_dict

    sources = arns(metrics)
    settings = load_settings(
        environ={"AWS_DEFAULT_REGION": REGION},
        ENDPOINTS={a: endpoint for a in sources.values() if a.startswith("arn:")},
        SNAPSHOT_EVERY=SNAPSHOT_EVERY,
        **sources,
    )
    create_resources(settings, shards=1, sleep=lambda s: time.sleep(min(s, 0.05)))

    completed: set[str] = set()

    def on_step(record, out, outcome: str) -> None:
        if outcome == "completed":
            completed.add(record.correlation_id)

    rec = Recorder()
    make_client = aws.client
    dynamodb_wire.OBSERVERS.append(rec.wire)

    def hooked_client(service: str, target: Any, settings_: Any) -> Any:
        c = make_client(service, target, settings_)
        rec.hook(c, service)
        return c

    aws.client = hooked_client  # clients made from now on (backends import it lazily)
    for (service, _, _), c in list(aws._clients.items()):
        rec.hook(c, service)

    engine = runtime.build_engine(settings, from_dict(definition(steps)), on_step=on_step)
    for (service, _, _), c in list(aws._clients.items()):
        rec.hook(c, service)
    logging.getLogger("fsmlog.step").setLevel(logging.WARNING)  # measure the calls, not stderr

    # the engine's phases, to say where the chain of calls goes
    gate = engine.gate
    gate.begin_many = rec.phase("admit (cache.begin_steps)", gate.begin_many)
    gate.renew = rec.phase("confirm/renew (cache.renew_leases)", gate.renew)
    gate.end_many = rec.phase("end (cache.end_steps)", gate.end_many)
    engine.services.log.append = rec.phase("append (log PutRecords)", engine.services.log.append)
    engine.services.retries.schedule = rec.phase("retries (schedule)", engine.services.retries.schedule)
    for name in ("_save_snapshots", "_save_snapshot"):  # a batch's snapshots together, or one by one
        if hasattr(engine, name):
            setattr(engine, name, rec.phase("snapshots (checkpoints.save)", getattr(engine, name)))
    engine.flush_metrics = rec.phase("metrics (flush)", engine.flush_metrics)

    invocations: list[Invocation] = []

    def handler(event: dict, context: Any) -> Any:
        inv = Invocation(records=len(event.get("Records", [])))
        with rec.lock:
            rec.current = inv
        inv.start, cpu0 = time.perf_counter(), time.process_time()
        try:
            return handle_kinesis_event(event, engine, context)
        finally:
            inv.end, inv.cpu = time.perf_counter(), time.process_time() - cpu0
            with rec.lock:
                rec.current = None
            invocations.append(inv)

    # Lambda-shaped Kinesis events, one invocation at a time; no retries happen on the happy path,
    # so the timer (a separate scheduled invocation) is left out
    loop = DevLoop(engine, batch_size=batch, poll_s=0.0, timer_every_s=float("inf"), handler=handler)

    emf = _Counting()
    rec.counting = True
    began = time.perf_counter()
    with contextlib.redirect_stdout(emf):
        for first in range(0, machines, 500):
            engine.start_many("bench", [{"i": i} for i in range(first, min(machines, first + 500))])
        finished = loop.run(until=lambda: len(completed) >= machines, timeout_s=3600)
    elapsed = time.perf_counter() - began
    rec.counting = False
    aws.client = make_client

    probe = probe_emulator(endpoint, sources["PRIMARY_CACHE_SOURCE"].rsplit("/", 1)[1], probe_s)
    runtime.reset(close=True)
    return summarize(rec, invocations, machines, steps, batch, latency_ms, metrics, memory_mb, elapsed, finished,
                     len(completed), emf.bytes, probe)


def probe_emulator(endpoint: str, table: str, seconds: float) -> dict[str, float]:
    """moto's ceiling, measured now with the run's latency: conditional UpdateItem calls per second with
    16 in flight and with one; each on its own item, as a batch's leases are."""
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "dynamodb", region_name=REGION, endpoint_url=endpoint,
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}, max_pool_connections=32))

    def one(key: str) -> None:
        try:
            client.update_item(TableName=table, Key={"key": {"S": key}},
                               UpdateExpression="SET #o = :me, #e = :exp ADD #t :one",
                               ConditionExpression="attribute_not_exists(#o) OR #e < :now OR #o = :me",
                               ExpressionAttributeNames={"#o": "owner", "#e": "expires", "#t": "token"},
                               ExpressionAttributeValues={":me": {"S": "probe"}, ":exp": {"N": "1"},
                                                          ":now": {"N": "2"}, ":one": {"N": "1"}},
                               ReturnValues="ALL_NEW")
        except client.exceptions.ConditionalCheckFailedException:
            pass

    def rate(threads: int) -> float:
        stop = time.perf_counter() + seconds
        done = [0] * threads

        def work(t: int) -> None:
            i = 0
            while time.perf_counter() < stop:
                one(f"L|probe:{t}:{i % 100}")
                i += 1
            done[t] = i

        began = time.perf_counter()
        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return sum(done) / (time.perf_counter() - began)

    one("L|probe:warm")
    return {"concurrent": rate(PROBE_THREADS), "sequential": rate(1)}


def summarize(rec: Recorder, invocations: list[Invocation], machines: int, steps: int, batch: int,
              latency_ms: float, metrics: str, memory_mb: int, elapsed: float, finished: bool, completed: int,
              emf_bytes: int, probe: dict[str, float]) -> dict:
    transitions = machines * steps
    busy = [i for i in invocations if i.records]
    chains = [longest_chain(i.calls) for i in busy]
    trips = [len(c) for c in chains]
    merged = [_merged(i.calls) for i in busy]
    records = sum(i.records for i in busy)
    cpu = [i.cpu for i in busy]
    client_cpu = [sum(c.cpu for c in i.calls) for i in busy]
    durations = [i.end - i.start for i in busy]
    latency = latency_ms / 1000.0
    modelled_s = [t * latency + c for t, c in zip(trips, cpu)]
    on_path: Counter = Counter()
    phase_ms: defaultdict[str, float] = defaultdict(float)
    for inv, chain in zip(busy, chains):
        for c in chain:
            on_path[phase_of(c, inv.phases)] += 1
        for name, spans in _by_name(inv.phases).items():
            phase_ms[name] += _union(spans) * 1000
    n = max(1, len(busy))

    own = rec.calls - rec.driver
    own_calls = sum(own.values())
    ddb_calls = sum(v for (svc, _), v in own.items() if svc == "dynamodb")
    units = dict(rec.units)
    units["cloudwatch_logs_ingested_gb"] = emf_bytes / 1e9
    units["lambda_request"] = len(busy)

    def usd(mean_duration_s: float) -> dict[str, float]:
        billed_ms = math.ceil(mean_duration_s * 1000)
        lam = {"lambda_gb_second": len(busy) * billed_ms / 1000 * memory_mb / 1024}
        return {k: (units.get(k, 0) + lam.get(k, 0)) * PRICES[k] / transitions * 1e6 for k in PRICES}

    measured_usd = usd(statistics.fmean(durations) if durations else 0.0)
    share = min(1.0, memory_mb / FULL_VCPU_MB)  # the vCPU a function of memory_mb gets: its CPU time stretches
    lambda_s = [t * latency + c / share for t, c in zip(trips, cpu)]
    modelled_usd = usd(statistics.fmean(lambda_s) if lambda_s else 0.0)
    ddb_per_transition = ddb_calls / transitions
    return {
        "latency_ms": latency_ms,
        "transitions_per_s": round(transitions / elapsed, 1),
        "round_trips_per_batch": round(statistics.fmean(trips), 2) if trips else 0.0,
        "round_trips_per_batch_max": max(trips, default=0),
        "round_trips_per_batch_merged": round(statistics.fmean(merged), 2) if merged else 0.0,
        "critical_path": {k: round(v / n, 2) for k, v in on_path.most_common()},
        "cpu_ms_per_batch": round(statistics.fmean(cpu) * 1000, 1) if cpu else 0.0,
        "client_cpu_ms_per_batch": round(statistics.fmean(client_cpu) * 1000, 1) if client_cpu else 0.0,
        "client_cpu_ms_per_call": round(sum(client_cpu) * 1000 / max(1, sum(len(i.calls) for i in busy)), 3),
        "modelled_transitions_per_s": round(records / sum(modelled_s), 1) if modelled_s and sum(modelled_s) else 0.0,
        "modelled_ms_per_batch": round(statistics.fmean(modelled_s) * 1000, 1) if modelled_s else 0.0,
        "measured_ms_per_batch": round(statistics.fmean(durations) * 1000, 1) if durations else 0.0,
        "phase_ms_per_batch": {k: round(v / n, 1) for k, v in sorted(phase_ms.items(), key=lambda kv: -kv[1])},
        "emulator_calls_per_s": round(probe["concurrent"], 1),
        "emulator_calls_per_s_sequential": round(probe["sequential"], 1),
        "emulator_transitions_per_s_ceiling": round(probe["concurrent"] / ddb_per_transition, 1)
        if ddb_per_transition else None,
        "api_calls_per_transition": round(own_calls / transitions, 3),
        "dynamodb_calls_per_transition": round(ddb_per_transition, 3),
        "driver_calls_per_transition": round(sum(rec.driver.values()) / transitions, 3),
        "calls_by_operation": {f"{svc}.{op}": v for (svc, op), v in sorted(rec.calls.items())},
        "write_units_per_transition": round(units.get("dynamodb_write_request_unit", 0) / transitions, 3),
        "read_units_per_transition": round(units.get("dynamodb_read_request_unit", 0) / transitions, 3),
        "kinesis_payload_units_per_transition": round(units.get("kinesis_put_payload_unit", 0) / transitions, 3),
        "usd_per_million_transitions": round(sum(measured_usd.values()), 4),
        "usd_breakdown": {k: round(v, 4) for k, v in measured_usd.items() if v},
        "usd_per_million_transitions_modelled_duration": round(sum(modelled_usd.values()), 4),
        "prices": {"date": PRICES_DATE, "region": REGION, "lambda_memory_mb": memory_mb},
        "machines": machines,
        "steps": steps,
        "transitions": transitions,
        "completed": completed,
        "finished": finished,
        "batch": batch,
        "invocations": len(busy),
        "records_per_batch": round(records / n, 1),
        "metrics_sink": metrics,
        "emf_bytes_per_transition": round(emf_bytes / transitions, 1),
        "elapsed_s": round(elapsed, 2),
        "modelled": "modelled_* = batch / (round trips x latency + CPU per batch), both measured here; "
                    "transitions_per_s and emulator_* are measured on moto",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=10.0, help="modelled latency of every request")
    parser.add_argument("--machines", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100, help="records per GetRecords (the mapping's BatchSize)")
    parser.add_argument("--metrics", choices=("emf", "cloudwatch"), default="emf")
    parser.add_argument("--memory-mb", type=int, default=512, help="the function's memory, for GB-seconds")
    parser.add_argument("--probe-s", type=float, default=3.0, help="seconds per emulator ceiling probe")
    parser.add_argument("--server", choices=("keepalive", "werkzeug"), default="keepalive",
                        help="moto behind Hypercorn, connections kept alive as on AWS (default), or moto's own "
                             "server, which opens a connection per call")
    args = parser.parse_args()
    print(json.dumps(run(args.machines, args.steps, args.batch, args.latency_ms, args.metrics, args.memory_mb,
                         args.probe_s, args.server)))


if __name__ == "__main__":
    main()
