"""Properties of the order pipeline under redelivery, written with fsmlog.testing (README: "Testing your
machines"). Every case runs the real engine on files of its own, with generated orders and faults."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import order_actions
from hypothesis import given, settings
from hypothesis import strategies as st

from fsmlog.testing import cases, contexts_from_schema

FSM = Path(__file__).with_name("fsm.yaml")
ORDERS = contexts_from_schema(Path(__file__).with_name("context.schema.json"))


@settings(max_examples=30, deadline=None)
@given(case=cases("order", ORDERS, machines=st.integers(1, 3)))
def test_each_order_is_charged_at_most_once_and_stock_never_goes_negative(fsmlog_kit, case):
    run = fsmlog_kit(FSM).run(case)  # crashes before commits, duplicates, retries, aborts, interleaved
    with run.inside():  # the run's own payment gateway and warehouse
        charges = order_actions.gateway().charges()
        shelf = order_actions.warehouse().levels()
        held = order_actions.warehouse().held()
    per_order = Counter(key.split(":")[0] for key, *_ in charges)
    assert all(n == 1 for n in per_order.values()), per_order
    assert all(units >= 0 for units in shelf.values()), shelf
    for sku, (_, _, stock, _) in order_actions.CATALOGUE.items():
        assert shelf[sku] + held.get(sku, 0) == stock  # units are on the shelf or held, never lost
    charge_of = {key.split(":")[0]: charge_id for key, charge_id, *_ in charges}
    for m in run.machines:
        if m.final.state == "done":  # every shipped order was charged, with the charge it recorded
            assert m.final.context["charge_id"] == charge_of[m.correlation_id]


def test_the_built_in_properties_hold(fsmlog_kit):
    fsmlog_kit(FSM).check("order", ORDERS, examples=30, seed=11).assert_ok()
