"""The local worker consumes both embedded stream sides: a record that reached the secondary is run.

Issue 9, item 2: a record appended to the secondary stream (the primary had
failed over) was never read, because ``fsmlog worker`` claimed only the
primary's batches. Every test here would fail on that worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventlog.codec import encode
from eventlog.errors import ServiceUnavailable
from eventlog.event import START, Event
from eventlog.failover import FailoverProxy
from eventlog.log import OutRecord
from eventlog.settings import SOURCES, load_settings
from eventlog.sides import SECONDARY, read_machine
from handlers.engine import Engine
from handlers.wiring import open_services
from handlers.worker import Worker
from projections.definition import from_dict
from projections.fold import fold

ROOT = Path(__file__).resolve().parents[2]

DEFINITION = {
    "machines": [{
        "name": "pair",
        "states": [
            {"name": "a", "initial": True, "do_action": f"{__name__}.go",
             "transitions": [{"event": "next", "target": "b"}]},
            {"name": "b", "do_action": f"{__name__}.go", "transitions": [{"event": "next", "target": "c"}]},
            {"name": "c", "final": True},
        ],
    }],
}
RUNS: list[str] = []


def go(context, obj):
    RUNS.append(obj["idempotency_key"])
    return "next"


def both_sides(tmp_path: Path):
    """Every source on a.db, and the stream's secondary on b.db."""
    a = f"sqlite:///{tmp_path / 'a.db'}"
    b = f"sqlite:///{tmp_path / 'b.db'}"
    values = {f"PRIMARY_{k}_SOURCE": a for k in SOURCES}
    values["SECONDARY_STREAM_SOURCE"] = b
    return load_settings(environ={}, **values), a, b


@pytest.fixture
def rig(tmp_path):
    RUNS.clear()
    settings, a, b = both_sides(tmp_path)
    services = open_services(settings)
    engine = Engine(from_dict(DEFINITION), services, settings)
    yield engine, services, a, b
    services.close()


def start_record(engine: Engine, cid: str) -> OutRecord:
    mdef = engine.definitions.machine("pair")
    ev = Event.create(START, cid, "pair", mdef.hash, 0, 0, "a", None, engine.clock(), {})
    return OutRecord(cid, encode(ev))


def state_of(services, cid: str):
    from eventlog.codec import decode

    return fold(None, [decode(r.data) for r in read_machine(services.log, cid)])


def test_a_start_record_only_on_the_secondary_is_run_to_the_end(rig):
    engine, services, _, b = rig
    assert isinstance(services.log, FailoverProxy)
    services.log.secondary.append([start_record(engine, "on-secondary")])  # written while failed over

    worker = Worker(engine, services.log, batch_size=10)
    stats = worker.run_until_drained()

    state = state_of(services, "on-secondary")
    assert state is not None and state.status == "completed", state
    assert sorted(RUNS) == ["on-secondary:0", "on-secondary:1"]  # each step once
    assert stats.by_side.get(SECONDARY, 0) >= 1
    assert services.log.secondary.drained("fsmlog-worker")


def test_records_of_the_secondary_reach_the_engine_under_the_secondary_name(rig):
    engine, services, a, b = rig
    position = services.log.secondary.append([OutRecord("junk", b"\xff not a record")])[0]
    Worker(engine, services.log).run_until_drained()
    (letter,) = services.dead_letters.list()
    assert letter.source == b and letter.position.endswith(f":{position}")  # its own stream, raw position


def test_the_worker_takes_turns_between_the_sides(rig):
    engine, services, _, _ = rig
    services.log.primary.append([start_record(engine, "p")])
    services.log.secondary.append([start_record(engine, "s")])
    worker = Worker(engine, services.log, batch_size=1)
    worker.run_once()
    worker.run_once()
    assert worker.stats.by_side == {"primary": 1, "secondary": 1}


class _ClaimsDown:
    """The primary embedded log, failing every claim (held too long by another process, a broken disk)."""

    def __init__(self, log):
        self._log = log
        self.name = log.name

    def claim_batch(self, *args, **kwargs):
        raise ServiceUnavailable(f"{self.name}: database is locked")

    def __getattr__(self, name):
        return getattr(self._log, name)


def test_a_primary_that_cannot_be_claimed_from_does_not_hold_up_the_secondary(rig):
    engine, services, _, _ = rig
    services.log.secondary.append([start_record(engine, "during-outage")])
    log = FailoverProxy("STREAM", _ClaimsDown(services.log.primary), services.log.secondary)
    Worker(engine, log, batch_size=10).run_until_drained()
    assert sorted(r for r in RUNS if r.startswith("during-outage")) == ["during-outage:0"]


def test_every_side_failing_raises_for_the_loop_to_back_off(rig):
    engine, services, _, _ = rig
    log = FailoverProxy("STREAM", _ClaimsDown(services.log.primary), _ClaimsDown(services.log.secondary))
    with pytest.raises(ServiceUnavailable):
        Worker(engine, log).run_once()


def test_fsmlog_worker_once_and_status_cover_the_secondary(tmp_path, monkeypatch):
    """Through the CLI: `fsmlog worker --once` runs a machine started on the secondary only, and
    `fsmlog status` finds it (listing and by id)."""
    (tmp_path / "both_actions.py").write_text("def go(context, obj):\n    return 'next'\n")
    fsm = tmp_path / "fsm.yaml"
    fsm.write_text(json.dumps({"machines": [{
        "name": "pair",
        "states": [
            {"name": "a", "initial": True, "do_action": "both_actions.go",
             "transitions": [{"event": "next", "target": "b"}]},
            {"name": "b", "final": True},
        ],
    }]}))
    settings, a, b = both_sides(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSMLOG_") and not k.endswith("_SOURCE")}
    env.update({k: str(v) for k, v in settings.values.items() if k.endswith("_SOURCE") and v}, PYTHONPATH=str(ROOT),
               COLUMNS="200")

    def fsmlog(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fsmlog.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=180)

    from eventlog.backends.sqlite import SqliteLog
    from projections.definition import load

    monkeypatch.syspath_prepend(str(tmp_path))
    mdef = load(fsm).machine("pair")
    secondary = SqliteLog(b)
    try:
        ev = Event.create(START, "only-b", "pair", mdef.hash, 0, 0, "a", None, 1.0e9, {})
        secondary.append([OutRecord("only-b", encode(ev))])
    finally:
        secondary.close()

    listed = fsmlog("status", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [m["correlation_id"] for m in json.loads(listed.stdout)["machines"]] == ["only-b"]

    proc = fsmlog("worker", str(fsm), "--once")
    assert proc.returncode == 0, proc.stderr
    one = fsmlog("status", "only-b", "--json")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["machine"]["status"] == "completed"


def test_fsmlog_dev_polls_the_secondary_embedded_log_too(rig):
    """``fsmlog dev`` (the Lambda stand-in) polls each embedded side with its own offset; it used to refuse
    a secondary embedded stream outright."""
    from handlers.devloop import DevLoop

    engine, services, _, b = rig
    services.log.secondary.append([start_record(engine, "dev-b")])
    loop = DevLoop(engine, poll_s=0.01, timer_every_s=60.0)
    assert sorted(p.log.name for p in loop.pollers if p.kind == "embedded") == sorted(
        [services.log.primary.name, b])
    done = loop.run(until=lambda: (s := state_of(services, "dev-b")) is not None and s.terminal, timeout_s=30)
    assert done and state_of(services, "dev-b").status == "completed"
    assert services.log.secondary.committed("fsmlog-dev") is not None
