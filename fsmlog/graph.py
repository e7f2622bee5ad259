"""Machine definitions as diagrams: Graphviz DOT and Mermaid text.

Both show every state (initial with an arrow from a start dot, final ones
double-bordered), every transition labelled with its event (and its action,
``local`` ones dashed), waits drawn too (a ``wait: true`` state says it waits
for an event; a delayed transition says ``after 2m``; the transition its
``timeout`` fires is dotted, ``after 48h``), and optionally one state
highlighted: where a running machine currently is.
"""

from __future__ import annotations

import re

from projections.definition import MachineDef, StateDef, Transition

HIGHLIGHT = "#ffd54f"


def _dot_id(name: str) -> str:
    """A DOT quoted string; a newline in ``name`` becomes DOT's line break ``\\n``."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r", "").replace("\n", "\\n") + '"'


def _short(dotted: str | None) -> str:
    return dotted.rsplit(".", 1)[-1] if dotted else ""


def span(seconds: float) -> str:
    """``90s``, ``15m``, ``2h``, ``1d``, ``1h30m``: a duration as fsm.yaml writes it."""
    left = int(round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"


def _edge_label(s: StateDef, t: Transition) -> str:
    label = t.event + (f" / {_short(t.action)}" if t.action else "")
    if t.delay:
        label += f" (after {span(t.delay)})"
    if s.wait and s.timeout is not None and t.event == s.on_timeout:
        label += f" (timeout {span(s.timeout)})"
    return label


def _waits_for(s: StateDef) -> str:
    """What a wait state waits for, the same words in both formats (and ``fsmlog status``'s)."""
    return "waits for its children" if s.children else "waits for an event"


def to_dot(machine: MachineDef, current: str | None = None) -> str:
    """Graphviz DOT for ``machine``; ``current`` (a state name) is filled in."""
    lines = [
        f"digraph {_dot_id(machine.name)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded"];',
        '  __start [shape=point, label=""];',
    ]
    for s in machine.states:
        attrs = []
        label = s.name
        if s.do_action:
            label += f"\ndo: {_short(s.do_action)}"
        if s.wait:
            label += f"\n{_waits_for(s)}"
        attrs.append(f"label={_dot_id(label)}")
        if s.final:
            attrs.append("peripheries=2")
        if s.name == current:
            attrs.append(f'style="rounded,filled,bold", fillcolor="{HIGHLIGHT}"')
        lines.append(f"  {_dot_id(s.name)} [{', '.join(attrs)}];")
    lines.append(f"  __start -> {_dot_id(machine.initial.name)};")
    for s in machine.states:
        for t in s.transitions:
            attrs = [f"label={_dot_id(_edge_label(s, t))}"]
            if t.local:
                attrs.append("style=dashed")
            elif s.wait and t.event == s.on_timeout:
                attrs.append("style=dotted")
            lines.append(f"  {_dot_id(s.name)} -> {_dot_id(t.target)} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_id(name: str, ids: dict[str, str]) -> str:
    """Mermaid state ids must be plain words; other names get an id plus a label."""
    if name not in ids:
        base = re.sub(r"\W", "_", name) or "state"
        if base[0].isdigit():
            base = "s_" + base
        candidate, n = base, 1
        while candidate in ids.values():
            n += 1
            candidate = f"{base}_{n}"
        ids[name] = candidate
    return ids[name]


def _mermaid_label(text: str) -> str:
    return text.replace(":", "#58;").replace(";", "#59;")


def to_mermaid(machine: MachineDef, current: str | None = None) -> str:
    """Mermaid ``stateDiagram-v2`` text for ``machine``; ``current`` gets a highlight class."""
    ids: dict[str, str] = {}
    lines = ["stateDiagram-v2", f"  %% machine {machine.name} ({machine.hash})"]
    for s in machine.states:
        sid = _mermaid_id(s.name, ids)
        if sid != s.name:
            lines.append(f"  state \"{s.name}\" as {sid}")
    lines.append(f"  [*] --> {_mermaid_id(machine.initial.name, ids)}")
    for s in machine.states:
        for t in s.transitions:
            label = _edge_label(s, t) + (" (local)" if t.local else "")
            lines.append(f"  {ids[s.name]} --> {_mermaid_id(t.target, ids)} : {_mermaid_label(label)}")
        if s.final:
            lines.append(f"  {ids[s.name]} --> [*]")
        if s.wait:
            lines.append(f"  note right of {ids[s.name]} : {_waits_for(s)}")
    if current is not None and current in ids:
        lines.append(f"  classDef current fill:{HIGHLIGHT},stroke:#333,stroke-width:3px")
        lines.append(f"  class {ids[current]} current")
    return "\n".join(lines) + "\n"


def render(machine: MachineDef, fmt: str = "dot", current: str | None = None) -> str:
    if fmt == "dot":
        return to_dot(machine, current)
    if fmt == "mermaid":
        return to_mermaid(machine, current)
    raise ValueError(f"unknown graph format {fmt!r}; use dot or mermaid")
