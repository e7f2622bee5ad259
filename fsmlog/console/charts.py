"""Bar charts as inline SVG, drawn server-side (no script, no library)."""

from __future__ import annotations

import time
from xml.sax.saxutils import escape, quoteattr

WIDTH = 600
HEIGHT = 140
PAD_L, PAD_R, PAD_T, PAD_B = 34, 8, 10, 22


def bar_chart(title: str, values: list[int], start: float, css: str) -> str:
    """One bar per minute from ``start``; a bar's tooltip gives its minute and count."""
    top = max(values) if values and max(values) > 0 else 1
    n = max(len(values), 1)
    inner_w = WIDTH - PAD_L - PAD_R
    inner_h = HEIGHT - PAD_T - PAD_B
    bw = inner_w / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {css}" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'role="img" aria-label={quoteattr(f"{title}, per minute, peak {max(values, default=0)}")}>']
    for frac in (0.0, 0.5, 1.0):
        y = PAD_T + inner_h * (1 - frac)
        parts.append(f'<line class="grid" x1="{PAD_L}" y1="{y:.1f}" x2="{WIDTH - PAD_R}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{_tick(top * frac)}</text>')
    for i, v in enumerate(values):
        h = inner_h * v / top
        x = PAD_L + i * bw
        minute = time.strftime("%H:%M", time.localtime(start + 60 * i))
        parts.append(f'<rect class="bar" x="{x + 0.5:.1f}" y="{PAD_T + inner_h - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                     f'height="{h:.1f}"><title>{escape(f"{minute}: {v}")}</title></rect>')
    for i in range(0, n, 15):
        x = PAD_L + i * bw
        label = time.strftime("%H:%M", time.localtime(start + 60 * i))
        parts.append(f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 6}">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _tick(v: float) -> str:
    return f"{v:.0f}" if v == int(v) else f"{v:.1f}"
