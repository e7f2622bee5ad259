"""The order pipeline end to end on the embedded backend, plus its validation rules."""

from __future__ import annotations

import time
from pathlib import Path

import order_actions
import pytest

from eventlog.settings import SOURCES, load_settings
from handlers.engine import Engine
from handlers.wiring import open_services
from handlers.worker import Worker
from projections.definition import load

FSM = Path(__file__).with_name("fsm.yaml")


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv("ORDERS_GATEWAY_DB", str(tmp_path / "gateway.db"))
    url = f"sqlite:///{tmp_path}/orders.db"
    settings = load_settings(environ={}, RETRY_BASE_SECONDS=0.01, RETRY_CAP_SECONDS=0.05,
                             **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES})
    services = open_services(settings)
    engine = Engine(load(FSM), services, settings)

    def run(*contexts: dict) -> list:
        ids = [engine.start("order", ctx) for ctx in contexts]
        worker = Worker(engine, services.log, poll_s=0.01, retry_every_s=0.01)
        give_up = time.monotonic() + 60  # a guard against hanging, not a speed check
        worker.run(until=lambda: all(engine.status(i).terminal for i in ids) or time.monotonic() > give_up)
        return [engine.status(i) for i in ids]

    yield run
    services.close()


def test_orders_complete_with_one_charge_despite_the_gateway_timeout(pipeline):
    ada = {"sku": "book-42", "quantity": 2, "amount": "39.90", "customer": "ada@example.com"}
    grace = {"items": [{"sku": "mug-7", "qty": 1}, {"sku": "lamp-3", "qty": 2}],
             "customer": {"email": "grace@example.com", "name": "Grace"}, "currency": "USD"}
    states = pipeline(ada, grace)
    assert [s.status for s in states] == ["completed", "completed"]
    assert [s.state for s in states] == ["done", "done"]
    ctx = states[0].context
    assert ctx["total"] == 3990
    assert ctx["shipment"]["carrier"] == "parcel" and ctx["notifications"][0]["to"] == "ada@example.com"
    assert states[1].context["total"] == 1290 + 2 * 4900
    charges = order_actions.gateway().charges()
    assert len(charges) == 2  # retried, but charged once each
    assert [order_actions.gateway().attempts(c[0]) for c in charges] == [2, 2]  # the first try timed out
    assert {c[1] for c in charges} == {s.context["charge_id"] for s in states}


def test_invalid_and_unfulfillable_orders_are_rejected_with_a_reason(pipeline):
    bad_qty = {"items": [{"sku": "book-42", "qty": 0}], "customer": "x@example.com"}
    wrong_price = {"sku": "book-42", "quantity": 1, "amount": "10.00", "customer": "y@example.com"}
    sold_out = {"sku": "poster-1", "quantity": 1, "customer": "z@example.com"}
    too_expensive = {"sku": "chair-9", "quantity": 4, "customer": "w@example.com"}
    states = pipeline(bad_qty, wrong_price, sold_out, too_expensive)
    assert [s.state for s in states] == ["rejected"] * 4
    assert "quantity 0" in states[0].context["rejection"]
    assert "differs from the price 19.95" in states[1].context["rejection"]
    assert states[2].context["rejection"].startswith("out of stock: poster-1")
    declined = states[3].context
    assert declined["rejection"].startswith("card declined")
    assert "reservation" not in declined and declined["released_reservation"].startswith("res_")
    assert order_actions.warehouse().held() == {}  # the declined order's chairs went back on the shelf
    assert order_actions.warehouse().levels()["chair-9"] == order_actions.CATALOGUE["chair-9"][2]
    assert declined["notifications"][0]["subject"].endswith("could not be completed")
    assert order_actions.gateway().charges() == []


def test_demo_orders_are_stable_per_id():
    a = order_actions.demo_order("0123456789abcdef")
    assert a == order_actions.demo_order("0123456789abcdef")
    assert all(order_actions.CATALOGUE[i["sku"]][2] >= i["qty"] for i in a["items"])
