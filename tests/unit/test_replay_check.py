"""replay.check: each running machine's next record, judged against new definitions as the engine would."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventlog.codec import encode
from eventlog.event import COMPLETED, RETRY, START, STEP, Event
from eventlog.log import OutRecord
from eventlog.settings import SOURCES, load_settings
from handlers.wiring import open_services
from projections.definition import from_dict
from replay.check import HANDLED, PARKED, UPGRADED, check

T0 = 1_700_000_000.0


def machine(name: str, states: list[tuple[str, list[str]]]) -> dict:
    """A machine whose state i goes to state i+1 on each of its events; the last state is final."""
    out = []
    for i, (state, events) in enumerate(states):
        nxt = states[i + 1][0] if i + 1 < len(states) else None
        st: dict = {"name": state}
        if i == 0:
            st["initial"] = True
        if nxt is None:
            st["final"] = True
        else:
            st["transitions"] = [{"event": e, "target": nxt} for e in events]
        out.append(st)
    return {"name": name, "states": out}


OLD = from_dict({"machines": [machine("order", [("received", ["ok"]), ("charging", ["paid", "declined"]),
                                                ("done", [])]),
                              machine("legacy", [("a", ["go"]), ("b", [])])]})


@pytest.fixture
def services(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'fsm.db'}"
    svc = open_services(load_settings(environ={}, **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES}))
    yield svc
    svc.close()


def append(services, *events: Event) -> None:
    services.log.append([OutRecord(e.correlation_id, encode(e)) for e in events])


def test_each_running_machine_is_handled_upgraded_or_parked_with_the_reason(services):
    order, legacy = OLD.machine("order").hash, OLD.machine("legacy").hash
    append(services,
           Event.create(START, "m-start", "order", order, 0, 0, "received", None, T0),
           Event.create(STEP, "m-paid", "order", order, 1, 0, "charging", "paid", T0),
           Event.create(RETRY, "m-declined", "order", order, 1, 1, "charging", "declined", T0,
                        error_type="Boom", error_message="first try"),
           Event.create(START, "m-legacy", "legacy", legacy, 0, 0, "a", None, T0),
           Event.create(STEP, "m-done", "order", order, 1, 0, "charging", "paid", T0),
           Event.create(COMPLETED, "m-done", "order", order, 2, 0, "done", None, T0 + 1))
    # the new definitions: "declined" is gone from charging, and the legacy machine is gone
    new = from_dict({"machines": [machine("order", [("received", ["ok"]), ("charging", ["paid"]), ("done", [])])]})
    report = check(services.log, services.checkpoints, new, now=T0 + 10)
    outcome = {v.correlation_id: v.outcome for v in report.verdicts}
    assert outcome == {"m-start": UPGRADED, "m-paid": UPGRADED, "m-declined": PARKED, "m-legacy": PARKED}
    assert report.ended == 1
    reasons = {v.correlation_id: v.reason for v in report.parked}
    assert reasons["m-declined"] == "state 'charging' has no transition on event 'declined'"
    assert "machine 'legacy' is not in the new definitions" in reasons["m-legacy"]
    assert {r["machine"]: (r["upgraded"], r["parked"]) for r in report.summary()} == {
        "legacy": (0, 1), "order": (2, 1)}


def test_unchanged_definitions_handle_every_running_machine(services):
    order = OLD.machine("order").hash
    append(services, *(Event.create(START, f"m{i}", "order", order, 0, 0, "received", None, T0) for i in range(3)))
    report = check(services.log, services.checkpoints, OLD, now=T0)
    assert [v.outcome for v in report.verdicts] == [HANDLED] * 3 and not report.parked
    assert report.as_dict()["outcomes"] == {"handled": 3, "upgraded": 0, "parked": 0}
