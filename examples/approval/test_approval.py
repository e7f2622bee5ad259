"""The purchase-approval example on the embedded backend: approved in time, reminded then expired,
and a late decision refused; with quick.yaml's seconds and an injected clock, so nothing waits."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from eventlog.settings import SOURCES, load_settings
from handlers.engine import Engine, Inbound
from handlers.errors import EventRefused
from handlers.wiring import open_services
from projections.definition import load

HERE = Path(__file__).parent


class Clock:
    t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["fsm.yaml", "quick.yaml"])
def app(request, tmp_path):
    url = f"sqlite:///{tmp_path}/approval.db"
    settings = load_settings(environ={}, **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES})
    services = open_services(settings)
    clock = Clock()
    for svc in (services.log, services.retries, services.cache, services.dead_letters):
        if hasattr(svc, "clock"):
            svc.clock = clock
    engine = Engine(load(HERE / request.param), services, settings, clock=clock, rng=random.Random(1))
    hour = 3600.0 if request.param == "fsm.yaml" else 1.0  # quick.yaml: seconds for hours
    after = [None]

    def settle() -> None:
        while True:
            page = services.log.read(after[0], 100)
            if page:
                after[0] = page[-1].position
                engine.handle([Inbound(r.position, r.data, services.log.name, r.position) for r in page])
            elif not engine.run_due_retries():
                return

    yield engine, clock, settle, hour
    services.close()


def test_approved_in_time_places_the_order_with_the_approver(app):
    engine, clock, settle, hour = app
    cid = engine.start("purchase", {"item": "laptop", "amount": 1200})
    settle()
    clock.t += 23 * hour
    settle()
    engine.send_event(cid, "approve", {"by": "ana"})
    settle()
    state = engine.status(cid)
    assert (state.status, state.state, state.context["approved_by"]) == ("completed", "approved", "ana")


def test_no_decision_reminds_after_24_hours_and_expires_after_48(app):
    engine, clock, settle, hour = app
    cid = engine.start("purchase", {"item": "chair"})
    t0 = clock.t
    settle()
    clock.t = t0 + 24 * hour
    settle()
    state = engine.status(cid)
    assert state.state == "waiting_again" and state.context["reminders"] == 1
    clock.t = t0 + 48 * hour
    settle()
    assert (engine.status(cid).status, engine.status(cid).state) == ("completed", "expired")
    with pytest.raises(EventRefused) as info:
        engine.send_event(cid, "approve")
    assert info.value.code == "Ended"
