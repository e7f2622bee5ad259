"""Tables fit an 80-column terminal: every cell whole on one line, left-out columns named."""

from __future__ import annotations

from rich.console import Console

from eventlog.event import FAILED, RETRY, START, STEP, Event
from fsmlog.cli import output as out
from projections.fold import fold
from projections.state import MachineState

CIDS = ["3b9be5b1619346c49932017339b7644f", "36bd8fc830a949eda0644106ff4bfe22", "a652b7498c704646b7fa9ee7da16585e"]


def render(renderable, width: int) -> list[str]:
    console = Console(width=width, record=True, soft_wrap=True, color_system=None)
    with console.capture() as captured:
        console.print(renderable)
    return captured.get().splitlines()


def event(cid: str, kind: str, steps: int, state: str, ev: str | None, **extra) -> Event:
    return Event(kind, cid, "order", "0123456789abcdef", steps, extra.pop("retries", 0), state, ev, 1_700_000_000.5,
                 **extra)


def states() -> list[MachineState]:
    return [
        MachineState(event(CIDS[0], STEP, 3, "charging", "charged")),
        MachineState(event(CIDS[1], FAILED, 4, "shipping", None, error_type="CarrierDown",
                           error_message="order_actions.ShipOrder failed after 3 retries: the carrier API answered "
                                         "503 three times")),
        MachineState(event(CIDS[2], STEP, 1, "reserving", "reserved")),
    ]


def test_the_machines_table_fits_80_columns_with_short_ids_and_whole_cells():
    lines = render(out.machines_table(states(), "3 machine(s) in sqlite:///.fsmlog/local.db"), 80)
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    for s in states():  # each cell on one line: found whole in the row of its machine
        row = next(line for line in lines if line.startswith(s.correlation_id[:8]))
        assert s.status in row and s.state in row and s.machine in row
        assert s.correlation_id not in text
    assert "CarrierDown:" in text and "three times" in text  # the error wraps between words


def test_wide_shows_full_ids_and_every_column():
    lines = render(out.machines_table(states(), "t", wide=True), 80)
    text = "\n".join(lines)
    for cid in CIDS:
        assert cid in text
    header = next(line for line in lines if line.startswith("id"))
    assert header.split() == ["id", "machine", "status", "state", "steps", "retries", "updated", "error"]
    assert "not shown" not in text


def test_a_narrow_terminal_leaves_columns_out_and_says_which():
    lines = render(out.machines_table(states(), "t"), 60)
    assert max(len(line) for line in lines) <= 60
    header = next(line for line in lines if line.startswith("id"))
    assert header.split() == ["id", "status", "state", "error"]
    caption = " ".join(lines[lines.index(next(x for x in lines if x.startswith("not shown"))):])
    assert " ".join(caption.split()) == ("not shown at this width: machine, steps, retries, updated (--wide shows "
                                         "them)")
    words = {w for line in lines for w in line.split()}
    assert "order_actions.ShipOrder" in words  # the error's longest word is not folded


def test_the_history_table_fits_80_columns_without_folding_words():
    cid = CIDS[0]
    records = [
        event(cid, START, 0, "received", None),
        event(cid, STEP, 2, "reserving", "reserved"),
        event(cid, RETRY, 2, "reserving", "reserved", retries=1, error_type="PaymentGatewayTimeout",
              error_message="order_actions.ChargePayment failed: timed out on purpose: this example gateway fails "
                            "every charge's first try, to show a retry"),
        event(cid, STEP, 3, "charging", "charged"),
    ]
    rows, folded = [], None
    for n, ev in enumerate(records):
        folded = fold(folded, [ev])
        rows.append((str(n + 1), ev, folded))
    lines = render(out.records_table(rows, f"history of {cid} (4 records)"), 80)
    assert max(len(line) for line in lines) <= 80
    words = {w for line in lines for w in line.split()}
    for ev in records:  # kinds, states and events whole
        assert {ev.kind, ev.state} <= words and (ev.event is None or ev.event in words)
    for word in ("PaymentGatewayTimeout:", "order_actions.ChargePayment", "purpose:", "gateway", "retry"):
        assert word in words
