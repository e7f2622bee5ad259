"""The console's machine graph (pure SVG layout), the path a machine took, and its context diffs."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from eventlog.event import COMPLETED, RETRY, START, STEP, Event
from fsmlog.console.diagram import layout, render_svg
from fsmlog.console.queries import context_diff, path_taken
from projections.definition import load_text

SVG = "{http://www.w3.org/2000/svg}"

ORDERS = """\
machines:
- name: order
  states:
  - name: received
    initial: true
    transitions:
    - {event: valid, target: reserving, local: true}
    - {event: invalid, target: rejected}
  - name: reserving
    transitions:
    - {event: reserved, target: charging}
    - {event: out_of_stock, target: rejected}
  - name: charging
    transitions:
    - {event: charged, target: done}
    - {event: declined, target: rejected}
    - {event: retry_later, target: reserving}
  - name: done
    final: true
  - name: rejected
    final: true
"""


@pytest.fixture
def order():
    return load_text(ORDERS, check_actions=False).machine("order")


def ev(kind: str, steps: int, state: str, event: str | None, t: float, retries: int = 0, **ctx) -> Event:
    return Event.create(kind, "c1", "order", "h", steps, retries, state, event, t, ctx)


def test_every_state_gets_a_box_and_no_two_boxes_overlap(order):
    boxes, width, height = layout(order)
    assert set(boxes) == {s.name for s in order.states}
    items = list(boxes.values())
    for i, a in enumerate(items):
        assert 0 <= a.x and a.x + a.w <= width and 0 <= a.y and a.y + a.h <= height
        for b in items[i + 1:]:
            apart = a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y or b.y + b.h <= a.y
            assert apart, (a, b)
    # columns follow the distance from the initial state
    assert boxes["received"].x < boxes["reserving"].x < boxes["charging"].x < boxes["done"].x


def test_the_svg_is_well_formed_and_marks_current_visited_and_taken(order):
    svg = render_svg(order, "charging", {"received", "reserving"}, {("received", "valid"),
                                                                     ("reserving", "reserved")})
    root = ET.fromstring(svg)
    groups = {g.get("data-state"): g.get("class").split() for g in root.iter(f"{SVG}g")}
    assert "current" in groups["charging"] and "visited" in groups["reserving"]
    assert "final" in groups["done"] and "current" not in groups["done"]
    taken = [p for p in root.iter(f"{SVG}path") if "taken" in (p.get("class") or "").split()]
    titles = sorted(p.find(f"{SVG}title").text for p in taken if p.find(f"{SVG}title") is not None)
    assert titles == ["received --valid--> reserving", "reserving --reserved--> charging"]
    local = [p for p in root.iter(f"{SVG}path") if "local" in (p.get("class") or "").split()]
    assert len(local) == 1  # received --valid--> reserving is dashed


def test_names_are_escaped_in_the_svg():
    machine = load_text("""\
machines:
- name: m
  states:
  - name: a
    initial: true
    transitions:
    - {event: "x<script>&", target: b}
  - name: b
    final: true
""", check_actions=False).machine("m")
    svg = render_svg(machine)
    assert "<script>" not in svg and "x&lt;script&gt;&amp;" in svg
    ET.fromstring(svg)


def test_the_path_taken_fills_in_local_steps_from_the_definition(order):
    history = [ev(START, 0, "received", None, 1), ev(STEP, 2, "charging", "charged", 2),
               ev(RETRY, 2, "charging", "charged", 3, retries=1), ev(COMPLETED, 3, "done", None, 4)]
    visited, taken = path_taken(order, history)
    assert visited == {"received", "reserving", "charging", "done"}
    # received -> reserving -> charging left no record (local steps): the shortest way between them
    assert taken == {("received", "valid"), ("reserving", "reserved"), ("charging", "charged")}


def test_a_machine_that_never_moved_took_no_transition(order):
    visited, taken = path_taken(order, [ev(START, 0, "received", None, 1)])
    assert visited == {"received"} and taken == set()


def test_context_diff_names_added_changed_and_removed_keys():
    assert context_diff({"a": 1, "b": [1], "c": "x"}, {"a": 1, "b": [1, 2], "d": None}) == [
        ("~", "b", "[1, 2]"), ("+", "d", "null"), ("-", "c", '"x"')]
    assert context_diff({}, {}) == []
