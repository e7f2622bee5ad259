"""A test rig for the dispatch engine: services on one SQLite file in a temp dir, one injected clock.

Every service that keeps time (leases, flags, claims, retries) and every engine made here share the
rig's clock, so lease expiry and backoff are exact and no test waits. ``next_batch`` feeds the log
to an engine record by record, the way a trigger would.
"""

from __future__ import annotations

import random

import pytest

from eventlog.codec import decode
from eventlog.settings import SOURCES, load_settings
from handlers.engine import Engine, Inbound
from handlers.wiring import open_services
from projections.definition import from_dict
from projections.fold import fold


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class Rig:
    def __init__(self, tmp_path, machines: list[dict], **settings):
        url = f"sqlite:///{tmp_path}/engine.db"
        values = {f"PRIMARY_{kind}_SOURCE": url for kind in SOURCES}
        values.update(RETRY_BASE_SECONDS=2.0, RETRY_CAP_SECONDS=60.0, LEASE_SECONDS=60.0, LEASE_WAIT_SECONDS=5.0)
        values.update(settings)
        self.settings = load_settings(environ={}, **values)
        self.services = open_services(self.settings)
        self.clock = Clock()
        for svc in (self.services.log, self.services.checkpoints, self.services.retries, self.services.cache,
                    self.services.environment, self.services.metrics, self.services.dead_letters):
            if hasattr(svc, "clock"):
                svc.clock = self.clock
        self.definitions = from_dict({"machines": machines})
        self.engine = self.make_engine()
        self.after: str | None = None

    def make_engine(self, machines: list[dict] | None = None, *, worker_id: str | None = None, seed: int = 7,
                    services=None, sleep=None) -> Engine:
        """Another engine on the same services: other definitions, another worker, another seed."""
        definitions = from_dict({"machines": machines}) if machines is not None else self.definitions
        return Engine(definitions, services or self.services, self.settings, clock=self.clock,
                      sleep=sleep or self.clock.sleep, rng=random.Random(seed), worker_id=worker_id or f"test-{seed}")

    @property
    def log(self):
        return self.services.log

    def inbound(self, rec) -> Inbound:
        return Inbound(rec.position, rec.data, self.log.name, rec.position)

    def next_batch(self, limit: int = 100) -> list[Inbound]:
        recs = self.log.read(self.after, limit)
        if recs:
            self.after = recs[-1].position
        return [self.inbound(r) for r in recs]

    def drive(self, engine: Engine | None = None, rounds: int = 100) -> list:
        """Handle everything in the log, moving retries when their time comes; returns the batch results."""
        engine = engine or self.engine
        results = []
        for _ in range(rounds):
            batch = self.next_batch()
            if batch:
                results.append(engine.handle(batch))
                continue
            self.clock.t += 3600  # past any backoff
            if not engine.run_due_retries():
                return results
        raise AssertionError("machines did not settle")

    def records(self, cid: str):
        return [decode(r.data) for r in self.log.read_key(cid)]

    def full_fold(self, cid: str):
        return fold(None, self.records(cid))

    def metric(self, name: str, machine: str | None = None) -> float:
        dims = (("machine", machine),) if machine else ()
        return self.services.metrics.read().get((name, dims), 0.0)

    def close(self):
        self.services.close()


@pytest.fixture
def rig_factory(tmp_path):
    made = []

    def make(machines, **settings):
        rig = Rig(tmp_path, machines, **settings)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()
