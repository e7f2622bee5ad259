"""Committed logs must keep decoding, re-encoding and folding to what they meant when committed.

A failure here means the wire format or the fold's meaning changed. If that is intended, say
so in the change, run ``.venv/bin/python -m tests.golden.make_golden --write`` and commit the
new files with the reason; existing logs in the wild still hold the old bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eventlog.codec import decode, encode
from projections.fold import fold, fold_all, fold_records
from tests.golden.make_golden import LOGS, describe, unframe

HERE = Path(__file__).resolve().parent
NAMES = sorted(LOGS)


def committed(name: str) -> tuple[list[bytes], dict]:
    log, exp = HERE / f"{name}.log", HERE / f"{name}.expected.json"
    assert log.exists() and exp.exists(), f"golden files for {name} are missing: run make_golden --write"
    return list(unframe(log.read_bytes())), json.loads(exp.read_text(encoding="utf-8"))


def test_every_golden_log_is_committed():
    assert sorted(p.name for p in HERE.glob("*.log")) == [f"{n}.log" for n in NAMES]


@pytest.mark.parametrize("name", NAMES)
def test_records_decode_and_re_encode_to_the_same_bytes(name):
    records, expected = committed(name)
    assert len(records) == expected["records"]
    for i, raw in enumerate(records):
        assert encode(decode(raw)) == raw, f"{name} record {i}: the wire format changed"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("order", ["file order", "reversed"])
def test_fold_of_committed_log_matches_committed_expectation(name, order):
    records, expected = committed(name)
    if order == "reversed":
        records = records[::-1]
    got = describe(fold_records({}, records))
    assert got == expected["machines"], (
        f"folding {name}.log ({order}) no longer gives {name}.expected.json: the fold's meaning changed"
    )


@pytest.mark.parametrize("name", NAMES)
def test_every_fold_entry_point_agrees_on_the_golden_log(name):
    records, expected = committed(name)
    events = [decode(r) for r in records]
    assert describe(fold_all({}, events)) == expected["machines"]
    for cid in expected["machines"]:
        mine = [e for e in events if e.correlation_id == cid]
        assert describe({cid: fold(None, mine)}) == {cid: expected["machines"][cid]}
        half = len(mine) // 2
        assert fold(fold(None, mine[half:]), mine[:half]) == fold(None, mine)


def test_the_golden_logs_say_what_they_are_named_for():
    """Pin the headline facts by hand too, so a regenerated expectation cannot silently drift."""
    happy = committed("order_happy")[1]["machines"]
    assert {c: (m["status"], m["state"], m["steps"]) for c, m in happy.items()} == {
        "order-0001": ("completed", "shipped", 4),
        "order-0002": ("completed", "rejected", 2),
    }
    assert happy["order-0001"]["context"]["amount"] == {"$decimal": "19.90"}
    failed = committed("order_retry_then_fail")[1]["machines"]
    assert (failed["order-0003"]["status"], failed["order-0003"]["retries"]) == ("failed", 3)
    assert failed["order-0003"]["error"].startswith("CarrierDown: ")
    assert (failed["order-0004"]["status"], failed["order-0004"]["kind"], failed["order-0004"]["steps"]) == (
        "running", "retry", 2)
    doc = committed("doc_loop_abort")[1]["machines"]
    assert (doc["doc-0001"]["status"], doc["doc-0001"]["state"], doc["doc-0001"]["steps"]) == ("aborted", "review", 6)
    assert (doc["doc-0002"]["status"], doc["doc-0002"]["event"]) == ("running", "submit")


def test_make_golden_rebuilds_the_committed_bytes():
    """The generator is deterministic and in step with the committed files (it only checks here)."""
    from tests.golden.make_golden import main

    assert main([]) == 0


def test_golden_logs_are_runs_of_valid_machines():
    """The logs are what the engine would append for the machines they name (see make_golden)."""
    from projections.definition import from_dict
    from tests.golden.make_golden import APPROVAL, DOC, ORDER
    from tests.strategies import check_run

    machines = {"order": ORDER, "doc": DOC}
    defs = from_dict({"machines": [ORDER, DOC, APPROVAL]}, source="golden", check_actions=False)
    assert sorted(defs) == ["approval", "doc", "order"]
    for name in NAMES:
        events = [decode(r) for r in committed(name)[0]]
        for cid in {e.correlation_id for e in events}:
            mine = [e for e in events if e.correlation_id == cid]
            if mine[0].machine in machines:
                check_run(machines[mine[0].machine], mine)
                continue
            # a machine that waits: a wait's idle record, its timeout and sent events share a step
            mdef = defs.machine(mine[0].machine)
            for e in mine:
                assert mdef.accepts(e.state, None if e.terminal else e.event), e.describe()
                if e.kind == "step" and (e.event is None or e.due is not None or e.event_id is not None):
                    assert mdef.state(e.state).wait or e.due is not None, e.describe()
