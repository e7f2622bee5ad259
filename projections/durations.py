"""Durations as fsm.yaml writes them: ``90`` (seconds), ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"1h30m"``."""

from __future__ import annotations

import math
import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(value: object) -> float | None:
    """Seconds, or None when ``value`` is not a duration (negative, NaN, a boolean, bad text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                return None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
