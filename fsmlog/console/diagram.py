"""A machine definition drawn as SVG, server-side, with a layered layout computed here.

Pure Python (no Graphviz), so the console draws the same graph everywhere:
states are put in columns by their distance from the initial state, ordered in
each column by the mean row of their predecessors, and joined by curves; edges
that go back (or stay in a column) arc below. The current state is filled, the
states and transitions a machine went through are drawn bold. Every name is
XML-escaped: the SVG is inserted into the page as markup.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from projections.definition import MachineDef

NODE_H = 40
COL_GAP = 110
ROW_GAP = 34
MARGIN = 30
CHAR_W = 7.2  # a generous width of one character of the 13px sans-serif the stylesheet sets


@dataclass(frozen=True)
class Box:
    name: str
    x: float
    y: float
    w: float
    h: float = NODE_H

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


def layers(machine: MachineDef) -> list[list[str]]:
    """States by their BFS distance from the initial state; unreachable ones in a last column."""
    depth = {machine.initial.name: 0}
    queue = deque([machine.initial.name])
    by_name = {s.name: s for s in machine.states}
    while queue:
        name = queue.popleft()
        for t in by_name[name].transitions:
            if t.target not in depth and t.target in by_name:
                depth[t.target] = depth[name] + 1
                queue.append(t.target)
    last = max(depth.values()) + 1
    columns: list[list[str]] = [[] for _ in range(last + 1)]
    for s in machine.states:  # definition order is the first guess at an order within a column
        columns[depth.get(s.name, last)].append(s.name)
    columns = [c for c in columns if c]
    row = {name: i for c in columns for i, name in enumerate(c)}
    preds: dict[str, list[str]] = {s.name: [] for s in machine.states}
    for s in machine.states:
        for t in s.transitions:
            if t.target in preds and t.target != s.name:
                preds[t.target].append(s.name)
    for _ in range(2):  # barycentre passes: fewer crossings, stable for ties
        for c in columns[1:]:
            c.sort(key=lambda n: (sum(row[p] for p in preds[n]) / len(preds[n]) if preds[n] else row[n], row[n]))
            row.update({name: i for i, name in enumerate(c)})
    return columns


def layout(machine: MachineDef) -> tuple[dict[str, Box], float, float]:
    """A box per state, and the drawing's width and height."""
    columns = layers(machine)
    labels = {s.name: _label(s.name, s.do_action) for s in machine.states}
    widths = [max(max(len(x) for x in labels[n]) * CHAR_W + 28 for n in c) for c in columns]
    tallest = max(len(c) for c in columns)
    height = tallest * NODE_H + (tallest - 1) * ROW_GAP
    boxes: dict[str, Box] = {}
    x = MARGIN + 24.0  # room for the start dot
    for c, w in zip(columns, widths):
        top = MARGIN + (height - (len(c) * NODE_H + (len(c) - 1) * ROW_GAP)) / 2
        for i, name in enumerate(c):
            boxes[name] = Box(name, x, top + i * (NODE_H + ROW_GAP), w)
        x += w + COL_GAP
    return boxes, x - COL_GAP + MARGIN, height + 2 * MARGIN  # render_svg grows it for arcs below


def _label(name: str, do_action: str | None) -> list[str]:
    return [name] + ([f"do: {do_action.rsplit('.', 1)[-1]}"] if do_action else [])


def render_svg(machine: MachineDef, current: str | None = None,
               visited: Iterable[str] = (), taken: Iterable[tuple[str, str]] = ()) -> str:
    """The machine as one ``<svg>`` element; ``taken`` holds (state, event) pairs that fired."""
    boxes, width, height = layout(machine)
    visited, taken = set(visited), set(taken)
    parts = [
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" '
        'markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker>'
        '<marker id="arrow-taken" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" '
        'markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead taken"/></marker></defs>',
    ]
    init = boxes[machine.initial.name]
    parts.append(f'<circle class="start" cx="{init.x - 22:.1f}" cy="{init.cy:.1f}" r="5"/>')
    parts.append(f'<path class="edge taken" d="M{init.x - 17:.1f},{init.cy:.1f} L{init.x:.1f},{init.cy:.1f}" '
                 f'marker-end="url(#arrow-taken)"/>')
    labels: list[str] = []
    for s in machine.states:
        a = boxes[s.name]
        for t in s.transitions:
            if t.target not in boxes:
                continue
            b = boxes[t.target]
            on_path = (s.name, t.event) in taken
            cls = "edge" + (" taken" if on_path else "") + (" local" if t.local else "")
            path, lx, ly = _edge(a, b)
            marker = "url(#arrow-taken)" if on_path else "url(#arrow)"
            parts.append(f'<path class="{cls}" d="{path}" marker-end="{marker}">'
                         f'<title>{escape(f"{s.name} --{t.event}--> {t.target}")}</title></path>')
            text = t.event + (f" / {t.action.rsplit('.', 1)[-1]}" if t.action else "")
            w = len(text) * CHAR_W * 0.85 + 8
            height = max(height, ly + 20)
            width = max(width, lx + w / 2 + 4)
            labels.append(f'<rect class="edge-label-bg" x="{lx - w / 2:.1f}" y="{ly - 9:.1f}" width="{w:.1f}" '
                          f'height="16" rx="3"/><text class="edge-label{" taken" if on_path else ""}" '
                          f'x="{lx:.1f}" y="{ly + 3:.1f}" text-anchor="middle">{escape(text)}</text>')
    for s in machine.states:
        b = boxes[s.name]
        classes = ["state"]
        if s.name == current:
            classes.append("current")
        elif s.name in visited:
            classes.append("visited")
        if s.final:
            classes.append("final")
        parts.append(f'<g class="{" ".join(classes)}" data-state={quoteattr(s.name)}>')
        parts.append(f'<rect x="{b.x:.1f}" y="{b.y:.1f}" width="{b.w:.1f}" height="{b.h}" rx="8"/>')
        if s.final:
            parts.append(f'<rect class="inner" x="{b.x + 3:.1f}" y="{b.y + 3:.1f}" width="{b.w - 6:.1f}" '
                         f'height="{b.h - 6}" rx="6"/>')
        lines = _label(s.name, s.do_action)
        for i, line in enumerate(lines):
            dy = (i - (len(lines) - 1) / 2) * 14 + 4
            cls_text = "name" if i == 0 else "action"
            parts.append(f'<text class="{cls_text}" x="{b.cx:.1f}" y="{b.cy + dy:.1f}" '
                         f'text-anchor="middle">{escape(line)}</text>')
        parts.append("</g>")
    parts.extend(labels)  # labels last: above every edge
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="fsm-graph" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'width="{width:.0f}" height="{height:.0f}" role="img" '
            f'aria-label={quoteattr("machine " + machine.name)}>')
    return head + "".join(parts) + "</svg>"


def _edge(a: Box, b: Box) -> tuple[str, float, float]:
    """An SVG path from ``a`` to ``b`` and where its label goes."""
    if a.name == b.name:  # a loop over the box's top
        x0, x1, y = a.cx - 14, a.cx + 14, a.y
        return (f"M{x0:.1f},{y:.1f} C{x0 - 10:.1f},{y - 36:.1f} {x1 + 10:.1f},{y - 36:.1f} {x1:.1f},{y:.1f}",
                a.cx, y - 30)
    if b.x > a.x:  # forward: right side to left side
        x0, y0, x1, y1 = a.x + a.w, a.cy, b.x, b.cy
        mid = (x0 + x1) / 2
        return (f"M{x0:.1f},{y0:.1f} C{mid:.1f},{y0:.1f} {mid:.1f},{y1:.1f} {x1:.1f},{y1:.1f}",
                mid, (y0 + y1) / 2)
    # back or in the same column: bottom to bottom, arcing below both
    x0, y0, x1, y1 = a.cx + 8, a.y + a.h, b.cx - 8, b.y + b.h
    low = max(y0, y1) + 40 + abs(x0 - x1) * 0.08
    return (f"M{x0:.1f},{y0:.1f} C{x0:.1f},{low:.1f} {x1:.1f},{low:.1f} {x1:.1f},{y1:.1f}",
            (x0 + x1) / 2, low - 10)
