"""The wait keys of fsm.yaml: validation of wait/timeout/on_timeout (states) and delay (transitions),
durations, and the content hash (machines without the keys keep the hash they had before)."""

from __future__ import annotations

from pathlib import Path

import pytest

from projections.definition import from_dict, load
from projections.durations import parse_duration
from projections.errors import DefinitionError

ROOT = Path(__file__).resolve().parents[2]


def machine(asked: dict, ship_transition: dict | None = None) -> dict:
    return {"machines": [{"name": "m", "states": [
        {"name": "asked", "initial": True, **asked,
         "transitions": [{"event": "go", "target": "ship"}, {"event": "expire", "target": "done"}]},
        {"name": "ship", "do_action": "x.y",
         "transitions": [{"event": "shipped", "target": "done", **(ship_transition or {})}]},
        {"name": "done", "final": True},
    ]}]}


def problems(doc: dict) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        from_dict(doc, check_actions=False)
    return info.value.problems


@pytest.mark.parametrize("text, seconds", [(90, 90.0), (1.5, 1.5), ("90", 90.0), ("90s", 90.0), ("15m", 900.0),
                                           ("2h", 7200.0), ("1d", 86400.0), ("1h30m", 5400.0), (" 2H ", 7200.0)])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", [-1, "soon", "2x", "h", "1h 30m", "", True, None, [], float("nan"), "inf"])
def test_what_is_not_a_duration(text):
    assert parse_duration(text) is None


@pytest.mark.parametrize("asked, ship, expected", [
    ({"wait": True, "do_action": "x.y"}, None, "a 'wait: true' state runs no do_action"),
    ({"wait": True, "timeout": "1h", "on_timeout": "nope"}, None, "on_timeout 'nope' names no transition"),
    ({"wait": True, "timeout": "1h"}, None, "'timeout' needs 'on_timeout' too"),
    ({"wait": True, "on_timeout": "expire"}, None, "'on_timeout' needs 'timeout' too"),
    ({"wait": True, "timeout": "soon", "on_timeout": "expire"}, None, "timeout 'soon' is not a duration"),
    ({"do_action": "x.y", "timeout": "1h", "on_timeout": "expire"}, None, "'timeout' belongs on a 'wait: true' state"),
    ({"wait": "yes"}, None, "'wait' must be true, false or children"),
    ({"wait": True}, {"delay": "2 weeks"}, "delay '2 weeks' is not a duration"),
    ({"wait": True}, {"delay": 5, "local": True}, "a 'delay' transition cannot be 'local'"),
    ({"wait": True, "delay": 5}, None, "unknown key 'delay'"),
    ({"wait": True}, {"wait": True}, "unknown key 'wait'"),
])
def test_misused_wait_keys_are_named(asked, ship, expected):
    found = problems(machine(asked, ship))
    assert any(expected in p for p in found), found
    assert all("machine 'm'" in p for p in found)


def test_a_final_state_cannot_wait():
    doc = machine({"wait": True})
    doc["machines"][0]["states"][2]["wait"] = True
    assert any("a final state cannot wait" in p for p in problems(doc))


def test_the_wait_keys_are_loaded():
    m = from_dict(machine({"wait": True, "timeout": "48h", "on_timeout": "expire"}, {"delay": "15m"}),
                  check_actions=False).machine("m")
    asked, ship = m.state("asked"), m.state("ship")
    assert (asked.wait, asked.timeout, asked.on_timeout) == (True, 172800.0, "expire")
    assert ship.transition("shipped").delay == 900.0


def test_each_wait_key_changes_the_hash():
    base = from_dict(machine({"wait": True}), check_actions=False).machine("m").hash
    variants = [machine({}), machine({"wait": True, "timeout": "1h", "on_timeout": "expire"}),
                machine({"wait": True, "timeout": "2h", "on_timeout": "expire"}),
                machine({"wait": True, "timeout": "2h", "on_timeout": "go"}), machine({"wait": True}, {"delay": 5})]
    variants[0]["machines"][0]["states"][0]["do_action"] = "x.y"
    hashes = {from_dict(v, check_actions=False).machine("m").hash for v in variants}
    assert base not in hashes and len(hashes) == len(variants)
    assert from_dict(machine({"wait": True}, {"delay": "90s"}), check_actions=False).machine("m").hash == \
        from_dict(machine({"wait": True}, {"delay": 90}), check_actions=False).machine("m").hash


def test_a_machine_without_wait_keys_keeps_the_hash_it_had_before_they_existed():
    """Pinned: examples/orders' hash as computed before the wait keys existed (records in flight carry it)."""
    assert load(ROOT / "examples" / "orders" / "fsm.yaml", check_actions=False).machine("order").hash == \
        "92d4fefe61cca6d6"


def test_a_children_wait_needs_children_done_and_is_hashed_apart():
    found = problems(machine({"wait": "children"}))
    assert any("'wait: children' state needs a transition on event 'children_done'" in p for p in found)
    doc = machine({"wait": "children"})
    doc["machines"][0]["states"][0]["transitions"][0]["event"] = "children_done"
    m = from_dict(doc, check_actions=False).machine("m")
    assert m.state("asked").children and m.state("asked").wait
    doc["machines"][0]["states"][0]["wait"] = True
    assert from_dict(doc, check_actions=False).machine("m").hash != m.hash
