"""Chaos soak: machines run to completion, each step's side effect applied once, while every source fails
10% of its calls (``AWS_CHAOS`` on STREAM, CHECKPOINT, RETRY, CACHE, ENVIRONMENT, METRICS, DEAD_LETTER).

Two set-ups:

(a) the embedded SQLite backend, 200 machines x 10 steps, two local workers (threads, each its
    own engine and worker id) claiming batches of one file: a lease left behind by a failed
    ``end_step`` makes the other worker wait and hand the record back, as two Lambdas would;
(b) moto's server over HTTP: a Kinesis stream of two shards, DynamoDB for checkpoints, retries,
    cache, environment and dead letters, CloudWatch metrics, driven by the local dev loop
    (Lambda-shaped Kinesis events, batchItemFailures honoured, the retry timer). Bounded to
    50 machines x 10 steps: moto answers a few hundred calls a second, and every fault costs a
    redelivery after the poller's backoff.

Faults reach the actions too: each step uses the environment store (``obj["environment"]``, over
the engine's chaos-wrapped service), so an injected fault there fails the action and the step goes through
the retry source. Some undecodable records are mixed into the stream, so the dead-letter store
is called (and fails) as well. The chaos draws come from seeded RNGs, one per source.

The side effect (see soak_actions.py) inserts a row keyed by ``obj["idempotency_key"]`` and, only
when that row is new, adds one to the machine's total; attempts are counted apart. The soak
asserts every (machine, step) row exists exactly once, every machine's total is 10, every
machine completed in the log with a context that counted 10 steps, and the poison records were
parked. Re-executions (attempts > 1) are expected and reported, not failures. A deadline bounds
each run; past it the test fails naming the machines that did not finish.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eventlog.chaos import ChaosProxy, with_chaos
from eventlog.codec import decode
from eventlog.errors import BackendError, DecodeError
from eventlog.log import OutRecord
from eventlog.settings import SOURCES, Settings, load_settings
from handlers.engine import Engine
from handlers.services import Services
from handlers.wiring import open_backend
from projections.definition import Definitions, load
from projections.fold import fold_records
from tests.fixtures.servers import ACCOUNT, REGION, settings_for
from tests.integration import soak_actions

pytestmark = pytest.mark.integration

FSM = Path(__file__).with_name("soak_fsm.yaml")
STEPS = 10
FAULT_P = 0.1
SEED = 20240611
POISON = 8  # undecodable records mixed into the stream
SQLITE_MACHINES = 200
MOTO_MACHINES = 50
DEADLINE_S = 420.0  # generous: a loaded CI box runs the embedded soak in 1.5-3 min

TUNING: dict[str, Any] = {
    "AWS_CHAOS": {kind: FAULT_P for kind in SOURCES},
    "LEASE_SECONDS": 2.0,
    "LEASE_WAIT_SECONDS": 0.5,
    "RETRY_BASE_SECONDS": 0.05,
    "RETRY_CAP_SECONDS": 0.5,
    "SNAPSHOT_EVERY": 3,
}


def chaotic_services(settings: Settings, seed: int) -> tuple[Services, dict[str, Any]]:
    """The services ``open_services`` builds, but each chaos proxy draws from its own seeded RNG.

    Returns the services and the raw backends (no chaos) by kind, for checking afterwards.
    """
    seeds = random.Random(seed)
    wrapped: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    for kind in SOURCES:
        target = settings.source(kind, "PRIMARY")
        raw[kind] = open_backend(kind, target, settings)
        wrapped[kind] = with_chaos(raw[kind], target, settings, kind=kind, rng=random.Random(seeds.getrandbits(64)))
        assert isinstance(wrapped[kind], ChaosProxy), f"AWS_CHAOS does not reach the {kind} source"
    services = Services(log=wrapped["STREAM"], checkpoints=wrapped["CHECKPOINT"], retries=wrapped["RETRY"],
                        cache=wrapped["CACHE"], environment=wrapped["ENVIRONMENT"], metrics=wrapped["METRICS"],
                        dead_letters=wrapped["DEAD_LETTER"])
    return services, raw


def until_accepted(what: str, fn: Callable[[], Any], deadline: float) -> Any:
    """Call ``fn`` until no injected (or real) service fault refuses it."""
    while True:
        try:
            return fn()
        except BackendError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} kept failing until the deadline") from None
            time.sleep(0.01)


def start_machines(engine: Engine, count: int, deadline: float) -> list[str]:
    ids = [uuid.uuid4().hex for _ in range(count)]
    for first in range(0, count, 50):
        chunk = ids[first:first + 50]
        until_accepted("starting machines", lambda c=chunk: engine.start_many("soak", [{}] * len(c), c), deadline)
    return ids


def append_poison(log: Any, deadline: float) -> list[bytes]:
    poison = [b"\xc1 not a record %d" % i for i in range(POISON)]
    for data in poison:
        with pytest.raises(DecodeError):
            decode(data)
    until_accepted("appending poison", lambda: log.append([OutRecord(f"poison-{i}", d) for i, d in enumerate(poison)]),
                   deadline)
    return poison


def read_all(log: Any, page: int = 5000) -> Iterator[Any]:
    after = None
    while records := log.read(after, page):
        yield from records
        after = records[-1].position


class Soak:
    """What one soak run needs to check itself at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.effects_db = tmp_path / "effects.db"
        self.completed: set[str] = set()
        self.lock = threading.Lock()
        self.definitions: Definitions = load(FSM)

    def on_step(self, record: Any, out: Any, outcome: str) -> None:
        if outcome == "completed":
            with self.lock:
                self.completed.add(record.correlation_id)

    def done(self, ids: list[str]) -> bool:
        with self.lock:
            return self.completed.issuperset(ids)

    def check(self, ids: list[str], raw: dict[str, Any], poison: list[bytes], proxies: list[Services],
              started: float, timed_out: bool) -> dict[str, Any]:
        """Every assertion of the soak; returns the figures for the report."""
        states: dict[str, Any] = {}
        records = 0
        for rec in read_all(raw["STREAM"]):
            records += 1
            if not rec.key.startswith("poison-"):
                states = fold_records(states, [rec.data])
        unfinished = {cid: (s.status, s.state, s.steps) for cid, s in states.items() if s.status != "completed"}
        unfinished.update({cid: ("never seen", None, None) for cid in ids if cid not in states})
        if timed_out or unfinished:
            raise AssertionError(
                f"{len(unfinished)} of {len(ids)} machines did not complete within {DEADLINE_S:.0f} s: "
                + json.dumps(dict(list(unfinished.items())[:20]))
            )
        assert set(states) == set(ids)
        for cid in ids:
            s = states[cid]
            assert (s.state, s.steps, s.context.get("n")) == ("s9", STEPS, STEPS), (cid, s.as_dict())

        conn = sqlite3.connect(self.effects_db)
        try:
            effects = conn.execute("SELECT key, machine, step FROM effects").fetchall()
            totals = dict(conn.execute("SELECT machine, n FROM totals").fetchall())
            attempts = dict(conn.execute("SELECT key, n FROM attempts").fetchall())
        finally:
            conn.close()
        expected = {f"{cid}:{step}" for cid in ids for step in range(STEPS)}
        keys = [key for key, _, _ in effects]
        assert len(keys) == len(set(keys)) == len(expected)
        assert set(keys) == expected
        assert all(key == f"{machine}:{step}" for key, machine, step in effects)
        assert totals == {cid: STEPS for cid in ids}, "a step's effect was applied more than once (or never)"
        assert set(attempts) == expected

        letters = raw["DEAD_LETTER"].list(limit=10 * POISON + 100)
        parked = {bytes(letter.data) for letter in letters}
        assert parked == set(poison), "only the poison records are parked, and each of them is"

        injected: dict[str, int] = {kind: 0 for kind in SOURCES}
        for services in proxies:
            for kind, attr in (("STREAM", "log"), ("CHECKPOINT", "checkpoints"), ("RETRY", "retries"),
                               ("CACHE", "cache"), ("ENVIRONMENT", "environment"), ("METRICS", "metrics"),
                               ("DEAD_LETTER", "dead_letters")):
                injected[kind] += getattr(services, attr).injected
        busy = {kind for kind in SOURCES if kind != "DEAD_LETTER"}  # called hundreds of times each
        assert all(injected[kind] > 0 for kind in busy), injected
        reruns = {key: n for key, n in attempts.items() if n > 1}
        return {
            "machines": len(ids),
            "steps": STEPS,
            "log_records": records,
            "faults_injected": injected,
            "re_executed_steps": len(reruns),
            "extra_executions": sum(n - 1 for n in reruns.values()),
            "max_attempts": max(attempts.values()),
            "dead_letters": len(letters),
            "elapsed_s": round(time.monotonic() - started, 1),
        }


def report(record_property: Callable[[str, Any], None], name: str, figures: dict[str, Any]) -> None:
    record_property("soak", json.dumps(figures))
    print(f"\n{name}: {json.dumps(figures)}")


@pytest.fixture
def soak(tmp_path: Path) -> Iterator[Soak]:
    yield Soak(tmp_path)
    soak_actions.reset()


# --- (a) embedded SQLite, two local workers --------------------------------------------------------


def test_chaos_soak_embedded(soak: Soak, tmp_path: Path, record_property) -> None:
    from handlers.worker import Worker

    url = f"sqlite:///{tmp_path / 'fsmlog.db'}"
    settings = load_settings(environ={}, **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES}, **TUNING)
    started = time.monotonic()
    deadline = started + DEADLINE_S
    built = [chaotic_services(settings, SEED + n) for n in range(2)]
    engines = [Engine(soak.definitions, services, settings, rng=random.Random(SEED + n), on_step=soak.on_step)
               for n, (services, _) in enumerate(built)]
    raw = built[0][1]
    soak_actions.configure(str(soak.effects_db))

    poison = append_poison(built[0][0].log, deadline)
    ids = start_machines(engines[0], SQLITE_MACHINES, deadline)

    def finished() -> bool:
        return soak.done(ids) or time.monotonic() > deadline

    # the worker's pauses before handing a failed tail back (0.05 s doubling to 1 s) are shortened: at
    # 10% faults on every call most batches fail somewhere, and the soak is about outcomes, not pacing
    workers = [Worker(engine, services.log, batch_size=10, claim_ttl_s=10.0, poll_s=0.02,
                      sleep=lambda s: time.sleep(s / 5))
               for engine, (services, _) in zip(engines, built)]
    errors: list[BaseException] = []

    def run(worker: Worker) -> None:
        try:
            worker.run(until=finished)
        except BaseException as exc:  # surfaced below: a worker must never die of injected faults
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,), name=f"soak-worker-{n}") for n, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S + 60)
    try:
        assert not errors, errors
        assert not any(t.is_alive() for t in threads)
        # the poison records sit at the start of the log: handled (parked) before any machine could complete
        figures = soak.check(ids, raw, poison, [s for s, _ in built], started, not soak.done(ids))
        counters: dict[str, float] = {}
        for (name, _), value in raw["METRICS"].read().items():  # what got through the metrics chaos
            counters[name] = counters.get(name, 0) + value
    finally:
        for services, _ in built:
            services.close()  # the raw backends are the ones the chaos proxies wrap
    figures["batches"] = sum(w.stats.batches for w in workers)
    figures["redelivered_records"] = sum(w.stats.redelivered for w in workers)
    figures["retries_moved"] = sum(w.stats.retries_moved for w in workers)
    figures["abandoned_claims"] = sum(w.stats.abandoned_claims for w in workers)
    figures["metrics"] = {k: int(v) for k, v in sorted(counters.items())}
    report(record_property, "embedded soak", figures)


# --- (b) moto: Kinesis + DynamoDB + CloudWatch, through the dev loop --------------------------------


def test_chaos_soak_moto(soak: Soak, moto_server: str, record_property) -> None:
    from fsmlog.resources import create_resources
    from handlers.devloop import DevLoop
    from handlers.triggers import runtime

    tag = uuid.uuid4().hex[:8]
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/fsmlog-soak-{tag}-"
    sources = {
        "PRIMARY_STREAM_SOURCE": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/fsmlog-soak-{tag}",
        "PRIMARY_CHECKPOINT_SOURCE": table + "checkpoints",
        "PRIMARY_RETRY_SOURCE": table + "retries",
        "PRIMARY_CACHE_SOURCE": table + "cache",
        "PRIMARY_ENVIRONMENT_SOURCE": table + "environment",
        "PRIMARY_DEAD_LETTER_SOURCE": table + "dead-letters",
        "PRIMARY_METRICS_SOURCE": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:namespace/fsmlog-soak-{tag}",
    }
    settings = settings_for(moto_server, **sources, **TUNING)
    create_resources(settings, shards=2, sleep=lambda s: time.sleep(min(s, 0.05)))
    started = time.monotonic()
    deadline = started + DEADLINE_S
    services, raw = chaotic_services(settings, SEED)
    engine = Engine(soak.definitions, services, settings, rng=random.Random(SEED), on_step=soak.on_step)
    soak_actions.configure(str(soak.effects_db))

    poison = append_poison(services.log, deadline)
    ids = start_machines(engine, MOTO_MACHINES, deadline)
    loop = DevLoop(engine, batch_size=10, poll_s=0.02, timer_every_s=0.2)
    try:
        loop.run(until=lambda: soak.done(ids), timeout_s=max(1.0, deadline - time.monotonic()))
        # the poison records were read first; the last machines' last records may still be unread: let the
        # loop catch up, so everything in the stream went through the handler once before checking
        loop.run(until=lambda: loop.run_once() == 0, timeout_s=10)
        figures = soak.check(ids, raw, poison, [services], started, not soak.done(ids))
    finally:
        runtime.set_engine(None)
    figures["invocations"] = loop.stats.invocations
    figures["failed_items"] = loop.stats.failed_items
    figures["invocation_errors"] = loop.stats.errors
    figures["timer_runs"] = loop.stats.timer_runs
    figures["retries_moved"] = loop.stats.requeued
    report(record_property, "moto soak", figures)
