"""`fsmlog graph` DOT output as Graphviz draws it (fsmlog.graph.to_dot).

The DOT text is rendered by the real ``dot`` (Debian's graphviz, installed by
``make services``) and the SVG's text lines are checked, so an escaping slip
shows up as what a user would see: a stray backslash or a label on one line.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fsmlog.graph import to_dot
from projections.definition import from_dict, load

ORDERS = Path(__file__).resolve().parents[2] / "examples" / "orders"
SVG = "{http://www.w3.org/2000/svg}"

pytestmark = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' not installed: run make services")


def drawn_lines(dot_text: str) -> list[str]:
    """Every text line of the SVG that ``dot`` draws for ``dot_text``."""
    svg = subprocess.run(["dot", "-Tsvg"], input=dot_text, capture_output=True, text=True, check=True, timeout=60)
    return [el.text or "" for el in ET.fromstring(svg.stdout).iter(f"{SVG}text")]


@pytest.fixture
def orders(monkeypatch):
    monkeypatch.syspath_prepend(str(ORDERS))
    return load(ORDERS / "fsm.yaml").machine("order")


def test_state_labels_are_drawn_on_two_lines_without_backslashes(orders):
    lines = drawn_lines(to_dot(orders))
    assert [line for line in lines if "\\" in line] == []
    for state, action in [("received", "ValidateOrder"), ("charging", "ChargePayment"), ("notifying", "NotifyCustomer")]:
        i = lines.index(state)
        assert lines[i + 1] == f"do: {action}"
    assert "declined / ReleaseStock" in lines


def test_current_state_is_filled(orders):
    dot = to_dot(orders, current="charging")
    assert '"charging" [label="charging\\ndo: ChargePayment", style="rounded,filled,bold"' in dot
    assert "charging" in drawn_lines(dot)


def test_quotes_and_backslashes_in_names_are_drawn_as_written():
    name = 'a\\b "q"'
    machine = from_dict({"machines": [{"name": "m", "states": [
        {"name": name, "initial": True, "transitions": [{"event": 'go "now"', "target": "done"}]},
        {"name": "done", "final": True},
    ]}]}).machine("m")
    lines = drawn_lines(to_dot(machine))
    assert name in lines
    assert 'go "now"' in lines
