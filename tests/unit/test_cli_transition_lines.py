"""`fsmlog run`'s transition lines fit the terminal: broken between pieces (never mid-word),
continued under the state, a failed step's error wrapped under the id, no trailing padding."""

from __future__ import annotations

from rich.console import Console

from eventlog.event import COMPLETED, RETRY, START, STEP, Event
from fsmlog.cli import output as out

CID = "3b9be5b1619346c49932017339b7644f"
ERROR = ("order_actions.ChargePayment failed: timed out on purpose: this example gateway fails every charge's "
         "first try, to show a retry")


def render(renderable, width: int) -> list[str]:
    console = Console(width=width, soft_wrap=True, color_system=None)  # as the CLI's consoles
    with console.capture() as captured:
        console.print(renderable)
    return captured.get().splitlines()


def event(kind: str, steps: int, state: str, ev: str | None, t: float, **extra) -> Event:
    return Event(kind, CID, "order", "0123456789abcdef", steps, extra.pop("retries", 0), state, ev, t, **extra)


def head(t: float) -> str:
    return f"{out.clock_time(t)}  {CID[:8]}  "


def test_a_step_that_moved_on_is_one_line_at_80_columns_naming_its_next_event():
    line = out.transition_line(event(START, 0, "received", None, 1.0), event(STEP, 2, "reserving", "reserved", 2.0),
                               "step")
    assert render(line, 80) == [head(2.0) + "received --start--> reserving (+1 local)  next: reserved"]


def test_a_line_too_long_breaks_between_pieces_and_continues_under_the_state():
    record = event(RETRY, 2, "reserving", "reserved", 1.0, retries=1)
    line = out.transition_line(record, event(STEP, 3, "charging", "charged", 2.0), "step")
    assert render(line, 80) == [head(2.0) + "reserving --reserved--> charging  [attempt 2]",
                                " " * len(head(2.0)) + "next: charged"]
    assert render(line, 120) == [head(2.0) + "reserving --reserved--> charging  [attempt 2]  next: charged"]


def test_a_failed_attempts_error_wraps_between_words_under_the_id():
    retry = event(RETRY, 2, "reserving", "reserved", 2.0, retries=1, error_type="PaymentGatewayTimeout",
                  error_message=ERROR)
    lines = render(out.transition_line(event(STEP, 2, "reserving", "reserved", 1.0), retry, "retry"), 80)
    assert lines[0] == head(2.0) + "reserving --reserved--> (failed)  will retry (attempt 2)"
    assert lines[1:] == [
        " " * 14 + "PaymentGatewayTimeout: order_actions.ChargePayment failed: timed",
        " " * 14 + "out on purpose: this example gateway fails every charge's first",
        " " * 14 + "try, to show a retry",
    ]


def test_the_last_step_shows_its_outcome():
    line = out.transition_line(event(STEP, 5, "notifying", "notified", 1.0), event(COMPLETED, 6, "done", None, 2.0),
                               "completed")
    assert render(line, 80) == [head(2.0) + "notifying --notified--> done  completed"]
