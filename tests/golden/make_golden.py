"""Build the committed golden logs (and their expected folds) deterministically.

Run by hand from the project root:

    .venv/bin/python -m tests.golden.make_golden          # check: do the committed files match?
    .venv/bin/python -m tests.golden.make_golden --write  # regenerate them (review the diff!)

Each log is a file of length-prefixed records (4-byte big-endian length, then the encoded
record), in the order the log stored them, as the engine appends them (handlers/engine.py):
local steps skipped, retries, a redelivered duplicate, a late record after an abort.
Fixed times, fixed ids: the bytes only change if the wire format does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import struct
import sys
import uuid
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from eventlog.codec import decode, encode  # noqa: E402
from eventlog.event import ABORTED, COMPLETED, FAILED, RETRY, START, STEP, Event  # noqa: E402
from projections.fold import fold_records  # noqa: E402
from projections.state import MachineState  # noqa: E402

HERE = Path(__file__).resolve().parent
T0 = 1_700_000_000.0

# The machines the logs are runs of (fsm.yaml shape). Hashes are fixed stand-ins.
ORDER = {
    "name": "order",
    "max_retries": 3,
    "states": [
        {"name": "received", "initial": True,
         "transitions": [{"event": "ok", "target": "charged"}, {"event": "reject", "target": "rejected"}]},
        {"name": "charged", "transitions": [{"event": "pack", "target": "packed", "local": True}]},
        {"name": "packed", "transitions": [{"event": "ship", "target": "shipped"}]},
        {"name": "shipped", "final": True},
        {"name": "rejected", "final": True},
    ],
}
DOC = {
    "name": "doc",
    "states": [
        {"name": "draft", "initial": True, "transitions": [{"event": "submit", "target": "review"}]},
        {"name": "review",
         "transitions": [{"event": "revise", "target": "draft"}, {"event": "approve", "target": "published"}]},
        {"name": "published", "final": True},
    ],
}
APPROVAL = {
    "name": "approval",
    "states": [
        {"name": "asked", "initial": True, "wait": True, "timeout": "1h", "on_timeout": "expire",
         "transitions": [{"event": "approve", "target": "ship"}, {"event": "expire", "target": "expired"},
                         {"event": "hold", "target": "held"}]},
        {"name": "ship", "transitions": [{"event": "shipped", "target": "done", "delay": "2m"}]},
        {"name": "held", "wait": True, "transitions": [{"event": "release", "target": "done"}]},
        {"name": "done", "final": True},
        {"name": "expired", "final": True},
    ],
}
HASHES = {"order": "0rder0golden0001", "doc": "d0c0golden000001", "approval": "appr0golden00001"}


class Run:
    """Records of one machine instance, each stamped with the time it was appended."""

    def __init__(self, machine: str, cid: str, start: float):
        self.machine, self.cid, self.clock = machine, cid, start
        self.records: list[Event] = []

    def add(self, kind: str, steps: int, retries: int, state: str, event: str | None,
            context: dict[str, Any] | None = None, **extra: Any) -> Event:
        self.clock += 1.0
        e = Event.create(kind, self.cid, self.machine, HASHES[self.machine], steps, retries, state, event,
                         self.clock, context, **extra)
        self.records.append(e)
        return e


def interleave(*runs: Run) -> list[Event]:
    """The log's order: by append time, then correlation id (all times are distinct per run)."""
    return sorted((e for r in runs for e in r.records), key=lambda e: (e.time, e.correlation_id))


def order_happy() -> list[Event]:
    berlin = ZoneInfo("Europe/Berlin")
    ctx = {"amount": Decimal("19.90"), "sku": "A-1", "qty": 2,
           "placed_at": dt.datetime(2024, 3, 31, 1, 59, 30, tzinfo=berlin)}
    a = Run("order", "order-0001", T0)
    a.add(START, 0, 0, "received", None, ctx)
    ctx = {**ctx, "validated": True}
    step1 = a.add(STEP, 1, 0, "received", "ok", ctx)
    # step 2 (charged, pack) is local: run in the same invocation, never appended
    ctx = {**ctx, "payment_id": uuid.UUID("6f1c2a9e-0d4b-4c1e-9a53-2b8f3e7d5c10"), "receipt": b"\x00PDF\xff",
           "charged_at": dt.datetime(2024, 3, 31, 3, 0, 5, 250000, tzinfo=berlin)}
    a.add(STEP, 3, 0, "packed", "ship", ctx)
    a.add(COMPLETED, 4, 0, "shipped", None, {**ctx, "tracking": ["DE", 123456789, None]})
    b = Run("order", "order-0002", T0 + 0.5)
    b.add(START, 0, 0, "received", None, {"amount": Decimal("-5.00"), "sku": "B-2", "qty": 0})
    b.add(STEP, 1, 0, "received", "reject", {"amount": Decimal("-5.00"), "reason": "negative amount"})
    b.add(COMPLETED, 2, 0, "rejected", None, {"amount": Decimal("-5.00"), "reason": "negative amount"})
    log = interleave(a, b)
    log.insert(len(log) - 1, step1)  # a redelivered duplicate, late
    return log


def order_retry_then_fail() -> list[Event]:
    a = Run("order", "order-0003", T0)
    ctx = {"amount": Decimal("1234.5678"), "carrier": "slowpost", "at": dt.datetime(2024, 1, 2, 3, 4, 5)}
    a.add(START, 0, 0, "received", None, ctx)
    a.add(STEP, 1, 0, "received", "ok", ctx)
    a.add(STEP, 3, 0, "packed", "ship", ctx)
    for r in (1, 2, 3):
        a.add(RETRY, 3, r, "packed", "ship", {**ctx, "attempts": r},
              error_type="CarrierDown", error_message=f"carrier API 503 (attempt {r - 1})")
    a.add(FAILED, 3, 3, "packed", "ship", {**ctx, "attempts": 3},
          error_type="CarrierDown", error_message="shop.actions.Ship failed after 3 retries: carrier API 503")
    b = Run("order", "order-0004", T0 + 0.25)
    ctx = {"amount": Decimal("7"), "coupon": None, "weights": [0.5, -0.0, 1e300]}
    b.add(START, 0, 0, "received", None, ctx)
    b.add(RETRY, 0, 1, "received", None, ctx, error_type="Timeout", error_message="inventory timed out")
    b.add(STEP, 1, 0, "received", "ok", ctx)
    # step 2 is local and failed inside its invocation: its retry is appended, its step record never was
    b.add(RETRY, 2, 1, "charged", "pack", {**ctx, "pack_attempt": 1},
          error_type="LabelPrinter", error_message="out of paper")
    return interleave(a, b)


def doc_loop_abort() -> list[Event]:
    a = Run("doc", "doc-0001", T0)
    notes: list[Any] = []
    a.add(START, 0, 0, "draft", None, {"title": "Spec", "notes": notes, "reviewers": {1: "ana", 2: "bo"}})
    steps = 0
    for round_ in range(3):
        steps += 1
        a.add(STEP, steps, 0, "draft", "submit", {"title": "Spec", "notes": notes, "round": round_})
        steps += 1
        notes = [*notes, {"round": round_, "by": "ana", "text": f"revise section {round_ + 1}"}]
        a.add(STEP, steps, 0, "review", "revise", {"title": "Spec", "notes": notes, "round": round_})
    last = a.records[-1]
    a.clock += 1.0
    aborted = last.evolve(kind=ABORTED, time=a.clock, error_type="Aborted", error_message="stuck in review")
    a.records.append(aborted)
    # a worker that had the step before the abort appends its outcome late: it must change nothing
    a.add(STEP, steps + 1, 0, "draft", "submit", {"title": "Spec", "notes": notes, "round": 3})
    b = Run("doc", "doc-0002", T0 + 0.5)
    b.add(START, 0, 0, "draft", None, {"title": "Draft \u00e9t\u00e9 \U0001f4dd", "score": 0.1})
    b.add(STEP, 1, 0, "draft", "submit", {"title": "Draft \u00e9t\u00e9 \U0001f4dd", "score": 0.30000000000000004})
    return interleave(a, b)


def approval_waits() -> list[Event]:
    """Record version 2: timers (``due``), events sent from outside (``event_id``), applied ids (``seen``)."""
    a = Run("approval", "appr-0001", T0)
    ctx = {"item": "laptop", "amount": Decimal("1200.00")}
    a.add(START, 0, 0, "asked", None, ctx)
    a.add(STEP, 1, 0, "asked", "expire", ctx, due=T0 + 3602.0)  # waits; its timeout in the due-time store
    sent = a.add(STEP, 1, 0, "asked", "approve", {**ctx, "event_data": {"by": "ana"}}, event_id="form-1")
    a.add(STEP, 2, 0, "ship", "shipped", {**ctx, "event_data": {"by": "ana"}}, due=T0 + 124.0,
          seen=("form-1",))
    a.add(COMPLETED, 3, 0, "done", None, {**ctx, "event_data": {"by": "ana"}}, seen=("form-1",))
    b = Run("approval", "appr-0002", T0 + 0.5)
    b.add(START, 0, 0, "asked", None, {"item": "chair"})
    wait = b.add(STEP, 1, 0, "asked", "expire", {"item": "chair"}, due=T0 + 3602.5)
    b.records.append(wait)  # the timer's copy, appended again when due
    b.add(COMPLETED, 2, 0, "expired", None, {"item": "chair"})
    # an event sent while the timeout ran, reaching the log after it: parked by a worker, no change here
    b.add(STEP, 1, 0, "asked", "approve", {"item": "chair", "event_data": None}, event_id="late-1")
    c = Run("approval", "appr-0003", T0 + 0.75)
    c.add(START, 0, 0, "held", None, {"n": 1})
    c.add(STEP, 1, 0, "held", None, {"n": 1})  # waits for an event, no timeout
    c.add(STEP, 1, 0, "held", "release", {"n": 1, "event_data": [1, 2]}, event_id="r-1", seen=("form-0",))
    d = Run("approval", "appr-0003:1.0", T0 + 0.875)  # a child machine: its records name the parent
    d.add(START, 0, 0, "asked", None, {"price": 3}, parent="appr-0003")
    d.add(COMPLETED, 2, 0, "expired", None, {"price": 3}, parent="appr-0003")
    log = interleave(a, b, c, d)
    log.append(sent)  # a duplicate send, redelivered late
    return log


LOGS = {
    "order_happy": order_happy,
    "order_retry_then_fail": order_retry_then_fail,
    "doc_loop_abort": doc_loop_abort,
    "approval_waits": approval_waits,
}


# ---------------------------------------------------------------- file format and expectations


def frame(records: Iterable[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(r)) + r for r in records)


def unframe(data: bytes) -> Iterator[bytes]:
    """Split a golden log into records; a torn frame is an error, never silently dropped."""
    i = 0
    while i < len(data):
        if i + 4 > len(data):
            raise ValueError(f"torn length prefix at byte {i}")
        (n,) = struct.unpack_from(">I", data, i)
        if i + 4 + n > len(data):
            raise ValueError(f"record at byte {i} claims {n} bytes, only {len(data) - i - 4} left")
        yield data[i + 4:i + 4 + n]
        i += 4 + n


def json_safe(value: Any) -> Any:
    """A JSON form of a context value that keeps its type: what the golden files compare on."""
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is float:
        return value if value == value and abs(value) != float("inf") else {"$float": repr(value)}
    if type(value) is bytes:
        return {"$bytes": value.hex()}
    if type(value) is Decimal:
        return {"$decimal": str(value)}
    if type(value) is uuid.UUID:
        return {"$uuid": str(value)}
    if type(value) is dt.datetime:
        return {"$datetime": value.isoformat(), "zone": getattr(value.tzinfo, "key", None), "fold": value.fold}
    if type(value) is list:
        return [json_safe(v) for v in value]
    if type(value) is dict:
        if all(type(k) is str for k in value):
            return {k: json_safe(v) for k, v in value.items()}
        return {"$map": [[json_safe(k), json_safe(v)] for k, v in value.items()]}
    raise TypeError(f"no golden form for {type(value).__name__}")


def describe(states: dict[str, MachineState]) -> dict[str, Any]:
    """Everything the fold says about each machine, JSON-safe, by correlation id."""
    return {
        cid: {
            **s.as_dict(),
            "kind": s.last.kind,
            "error_type": s.last.error_type,
            "error_message": s.last.error_message,
            "upgraded_from": s.last.upgraded_from,
            "version": s.version,
            "context": json_safe(s.context),
            **_waits(s.last),
        }
        for cid, s in sorted(states.items())
    }


def _waits(last: Event) -> dict[str, Any]:
    """Record version 2's fields, only where set (the version 1 logs' expectations stay as they were)."""
    out: dict[str, Any] = {}
    if last.due is not None:
        out["due"] = last.due
    if last.event_id is not None:
        out["event_id"] = last.event_id
    if last.seen:
        out["seen"] = list(last.seen)
    if last.parent is not None:
        out["parent"] = last.parent
    return out


def expectation(records: list[bytes]) -> dict[str, Any]:
    return {"records": len(records), "machines": describe(fold_records({}, records))}


def render(events: list[Event]) -> tuple[bytes, str]:
    records = [encode(e) for e in events]
    assert [decode(r) for r in records] == events
    return frame(records), json.dumps(expectation(records), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="overwrite the committed golden files")
    args = parser.parse_args(argv)
    stale = []
    for name, build in LOGS.items():
        log, expected = render(build())
        log_path, exp_path = HERE / f"{name}.log", HERE / f"{name}.expected.json"
        if args.write:
            log_path.write_bytes(log)
            exp_path.write_text(expected, encoding="utf-8")
            print(f"wrote {log_path.name} ({len(log)} bytes) and {exp_path.name}", file=sys.stderr)
        elif (not log_path.exists() or log_path.read_bytes() != log
              or not exp_path.exists() or exp_path.read_text(encoding="utf-8") != expected):
            stale.append(name)
    if stale:
        print(f"golden files differ from what this script builds: {', '.join(stale)} "
              f"(run with --write only if the change is intended)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
