"""Fold speed: decode + fold of raw log records, and rebuilding one machine with and without a snapshot.

Prints one JSON object (nothing else on stdout):
- ``fold_events_per_s``: ``projections.fold.fold_records`` over ``events`` encoded records of
  ``machines`` machines, shuffled (the order a replay of many shards delivers), each with a
  small realistic user context; one pass from no state, best of 3 (the first, cold run is
  reported too as ``fold_events_per_s_first_run``).
- ``rebuild_full_ms``: one machine with ``history`` records, decode + fold from nothing.
- ``rebuild_from_snapshot_ms``: the same machine from a snapshot ``tail`` records back:
  ``decode_snapshot`` + fold of the tail (best of 3; ``rebuild_full_ms`` is one run at full size).
- ``python``, ``events``, ``machines``, ``bytes_per_event`` (mean encoded record size).

Records are generated as encoded bytes directly (no Event list kept around).
Run: ``.venv/bin/python bench/fold.py [--scale 0.1]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eventlog.codec import encode  # noqa: E402
from eventlog.context import encode_context  # noqa: E402
from eventlog.event import COMPLETED, FAILED, RETRY, START, STEP, Event  # noqa: E402
from projections.fold import fold_records  # noqa: E402
from projections.state import Snapshot, decode_snapshot, encode_snapshot  # noqa: E402

T0 = 1_700_000_000.0
STATES = ("received", "validated", "charged", "packed", "shipped")
EVENTS = ("ok", "next", "ship", "retry_later", "confirm")
DHASH = "5f2a9c0e1b7d4e36"


def context_pool(rng: random.Random, n: int = 64) -> list[bytes]:
    """Encoded user contexts of the size real ones have: a few scalars, a date, an id, a short list."""
    out = []
    for i in range(n):
        ctx = {
            "order_id": f"ord-{rng.randrange(10**9):09d}",
            "amount": Decimal(rng.randrange(100, 10**6)) / 100,
            "currency": rng.choice(["EUR", "USD", "GBP"]),
            "customer": uuid.UUID(int=rng.getrandbits(128)),
            "placed_at": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=rng.randrange(10**7)),
            "items": [rng.randrange(1000) for _ in range(rng.randrange(1, 4))],
            "attempt": i % 3,
        }
        out.append(encode_context(ctx))
    return out


def machine_records(cid: str, n: int, ctxs: list[bytes], rng: random.Random) -> Iterator[bytes]:
    """``n`` encoded records of one machine: start, steps (some retried), and an end for most."""
    ends = rng.random() < 0.7
    yield encode(Event(START, cid, "order", DHASH, 0, 0, STATES[0], None, T0, rng.choice(ctxs)))
    made, step = 1, 0
    while made < n:
        step += 1
        state, event = STATES[step % 5], EVENTS[step % 5]
        if ends and made == n - 1:
            kind = COMPLETED if rng.random() < 0.8 else FAILED
            err = (None, None) if kind == COMPLETED else ("Boom", "carrier API 503")
            yield encode(Event(kind, cid, "order", DHASH, step, 0, state, None, T0 + made, rng.choice(ctxs), *err))
        else:
            yield encode(Event(STEP, cid, "order", DHASH, step, 0, state, event, T0 + made, rng.choice(ctxs)))
        made += 1
        if made < n - 1 and rng.random() < 0.1:
            yield encode(Event(RETRY, cid, "order", DHASH, step, 1, state, event, T0 + made, rng.choice(ctxs),
                               "Timeout", "inventory timed out"))
            made += 1


def best_of(runs: int, fn) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description="fold benchmark; prints one JSON object")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size (0.01 for a smoke run)")
    args = parser.parse_args()
    events, machines = int(1_000_000 * args.scale), max(1, int(10_000 * args.scale))
    history, tail = int(1_000_000 * args.scale), 100
    rng = random.Random(20240601)
    ctxs = context_pool(rng)

    per = events // machines
    records = [r for m in range(machines) for r in machine_records(f"order-{m:06d}", per, ctxs, rng)]
    rng.shuffle(records)
    size = sum(map(len, records))
    t = time.perf_counter()
    states = fold_records({}, records)
    first_s = time.perf_counter() - t
    many_s, states = best_of(2, partial(fold_records, {}, records))
    many_s = min(many_s, first_s)
    assert len(states) == machines
    n_many = len(records)
    del records

    one = list(machine_records("order-long", history, ctxs, random.Random(7)))
    full_s, full = best_of(1 if history >= 100_000 else 3, lambda: fold_records({}, one))
    head = fold_records({}, one[:-tail])["order-long"]
    snap = encode_snapshot(Snapshot(head, str(len(one) - tail), head.definition_hash))
    rest = one[-tail:]

    def from_snapshot():
        s = decode_snapshot(snap)
        return fold_records({s.correlation_id: s.state}, rest)

    snap_s, rebuilt = best_of(3, from_snapshot)
    assert rebuilt == full, "snapshot + tail must rebuild the same state"

    print(json.dumps({
        "python": platform.python_version(),
        "events": n_many,
        "machines": machines,
        "bytes_per_event": round(size / n_many, 1),
        "fold_events_per_s": round(n_many / many_s),
        "fold_events_per_s_first_run": round(n_many / first_s),
        "fold_total_s": round(many_s, 3),
        "history_events": len(one),
        "rebuild_full_ms": round(full_s * 1000, 1),
        "snapshot_tail_events": tail,
        "rebuild_from_snapshot_ms": round(snap_s * 1000, 3),
    }))


if __name__ == "__main__":
    main()
