"""Full-jitter exponential backoff for retried steps."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before attempt ``attempt`` (1 = first retry): uniform in [0, min(cap, base * 2**(attempt-1))].

    Full jitter spreads retries of many machines that failed together, so a
    recovering service is not hit by all of them at once.
    """
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return rng.uniform(0.0, ceiling)
