"""How the CLI shows things: live transition lines, machine tables, JSON documents."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from eventlog.event import COMPLETED, FAILED, RETRY, Event
from projections.state import MachineState

from .ids import short_ids
from .tables import Col, FittedTable
from .waits import WaitWords

STATUS_STYLE = {"completed": "green", "failed": "bold red", "aborted": "magenta", "running": "cyan"}
OUTCOME_STYLE = {"completed": "green", "failed": "bold red", "retry": "yellow", "step": "white", "aborted": "magenta"}

_console: Console | None = None
_err_console: Console | None = None


def console() -> Console:
    global _console
    if _console is None:
        _console = Console(highlight=False, soft_wrap=True)
    return _console


def err_console() -> Console:
    global _err_console
    if _err_console is None:
        _err_console = Console(stderr=True, highlight=False, soft_wrap=True)
    return _err_console


def print_json(document: Any) -> None:
    """One JSON document on stdout (plain: no colour codes, whatever the terminal)."""
    sys.stdout.write(json.dumps(document, indent=2, default=str, sort_keys=False) + "\n")
    sys.stdout.flush()


def short_id(cid: str) -> str:
    return cid if len(cid) <= 12 else cid[:8]


def clock_time(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1000):03d}"


ERROR_INDENT = 14  # under the id, past the time column
PIECE_GAP = "  "


class TransitionLine:
    """One handled record's line, laid out at the console's width when it is printed.

    The consoles soft-wrap (a long JSON or context line stays whole for copying), so rich would
    leave an over-long line to the terminal, which breaks it mid-word. Here the line breaks only
    between its pieces, continuing under the first one, and a failed step's error wraps between
    words under the id; no line ends in padding."""

    def __init__(self, head: Text, pieces: Sequence[Text], error: Text | None = None) -> None:
        self.head = head
        self.pieces = list(pieces)
        self.error = error

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        indent = self.head.cell_len
        line = self.head.copy()
        for i, piece in enumerate(self.pieces):
            gap = PIECE_GAP if i else ""
            if i and line.cell_len + len(gap) + piece.cell_len > width:
                yield line
                line, gap = Text(" " * indent), ""
            line.append_text(Text(gap) + piece)
        yield line
        if self.error is not None:
            for part in self.error.wrap(console, max(20, width - ERROR_INDENT), overflow="fold"):
                part.rstrip()
                yield Text(" " * ERROR_INDENT) + part


def transition_line(record: Event, out: Event | None, outcome: str, wait: str | None = None) -> TransitionLine:
    """``time  id  state --event--> state  (retries)  outcome`` for one handled record (a step that
    moved on shows its next event instead of the outcome ``step``, and what it waits for, ``wait``
    from ``waits.WaitWords``, so a run that pauses says why); a failed step's error
    (``Type: action failed: message``) follows, indented and wrapped to the terminal."""
    head = Text()
    head.append(clock_time(out.time if out is not None else record.time), style="dim")
    head.append("  ")
    head.append(f"{short_id(record.correlation_id):<8}", style="bold")
    head.append("  ")
    move = Text(record.state)
    move.append(f" --{record.event or 'start'}--> ", style="dim")
    if out is None:
        move.append("?")
    elif out.kind == RETRY:
        move.append("(failed)", style="yellow")
    elif out.kind == FAILED and out.steps == record.steps:  # its last attempt failed: it went nowhere
        move.append("(failed)", style="bold red")
    else:
        move.append(out.state)
        local = out.steps - record.steps - 1
        if local > 0:
            move.append(f" (+{local} local)", style="dim")
    pieces = [move]
    if record.retries:
        pieces.append(Text(f"[attempt {record.retries + 1}]", style="yellow"))
    if out is not None and out.kind == RETRY:  # the error (its message names the action) on lines of its own
        pieces.append(Text(f"will retry (attempt {out.retries + 1})", style="yellow"))
        return TransitionLine(head, pieces, _error(out, "yellow"))
    shows_next = out is not None and out.kind not in (COMPLETED, FAILED) and bool(out.event)
    if not ((shows_next or wait) and outcome == "step"):
        pieces.append(Text(outcome, style=OUTCOME_STYLE.get(outcome, "")))
    if out is not None and out.kind == FAILED:
        return TransitionLine(head, pieces, _error(out, "red"))
    if shows_next and out is not None:
        pieces.append(Text(f"next: {out.event}", style="dim"))
    if wait:
        pieces.append(Text(wait, style="yellow"))
    return TransitionLine(head, pieces)


def _error(ev: Event, style: str) -> Text:
    return Text(f"{ev.error_type}: {ev.error_message}", style=style)


def worker_counter(stats: Any, outcomes: dict[str, int]) -> str:
    """The worker's live line (under 80 columns): what its steps did so far."""
    ran = sum(outcomes.values())
    return (f"{ran} step(s) run: {outcomes.get('step', 0)} moved on, {outcomes.get('completed', 0)} completed, "
            f"{outcomes.get('retry', 0)} to retry, {outcomes.get('failed', 0)} failed; {stats.parked} parked")


def worker_summary(stats: Any, outcomes: dict[str, int]) -> list[str]:
    """The worker's totals at exit, one labelled line each (what each count means)."""
    ran = sum(outcomes.values())
    ended = ", ".join(f"{outcomes[k]} {k}" for k in ("completed", "failed", "aborted") if outcomes.get(k))
    rows = [
        ("records read", f"{stats.handled + stats.skipped + stats.parked + stats.failed} "
                         f"in {stats.batches} batch(es)"),
        ("steps run", f"{ran}: {outcomes.get('step', 0)} moved on, {ended or 'none ended'}, "
                      f"{outcomes.get('retry', 0)} failed and will retry"),
        ("nothing to run", f"{stats.skipped} (machine already ended, or step already done)"),
        ("parked", f"{stats.parked} (bad records; `fsmlog dead-letters list` shows them)"),
        ("handed back", f"{stats.failed} (a service failed; they are read again)"),
        ("retries run", f"{stats.retries_moved} (due retries and timers put back on the log)"),
    ]
    return ["worker summary:"] + [f"  {label:<15} {text}" for label, text in rows]


def event_dict(ev: Event, with_context: bool = True) -> dict[str, Any]:
    d: dict[str, Any] = {
        "kind": ev.kind,
        "machine": ev.machine,
        "steps": ev.steps,
        "retries": ev.retries,
        "state": ev.state,
        "event": ev.event,
        "time": ev.time,
        "definition_hash": ev.definition_hash,
    }
    if ev.error_type is not None:
        d["error_type"] = ev.error_type
        d["error_message"] = ev.error_message
    if ev.upgraded_from is not None:
        d["upgraded_from"] = ev.upgraded_from
    if with_context:
        d["context"] = ev.context
    return d


def status_counts(states: Iterable[MachineState]) -> dict[str, int]:
    counts = Counter(s.status for s in states)
    return {k: counts[k] for k in ("running", "completed", "failed", "aborted") if counts[k]}


def counts_text(counts: dict[str, int]) -> Text:
    text = Text()
    for i, (status, n) in enumerate(counts.items()):
        if i:
            text.append("  ")
        text.append(f"{status}: {n}", style=STATUS_STYLE.get(status, ""))
    return text or Text("no machines", style="dim")


MACHINE_COLUMNS = (Col("id"), Col("machine", 70), Col("status"), Col("state", 90), Col("steps", 60, justify="right"),
                   Col("retries", 40, justify="right"), Col("updated", 50), Col("error", 80, wrap=True))


def machines_table(states: list[MachineState], title: str | None = None, wide: bool = False,
                   ids: dict[str, str] | None = None, waits: WaitWords | None = None) -> FittedTable:
    """One row per machine, fitted to the terminal; ids short (``ids``: the short form of each, default
    ``short_ids`` of those shown) unless ``wide``. A waiting machine's status says what it waits for
    (``waits``, default ``WaitWords()``), since ``running`` alone hides a paused machine."""
    if ids is None:
        ids = short_ids(s.correlation_id for s in states)
    waits = waits or WaitWords()
    rows = [(s.correlation_id if wide else ids.get(s.correlation_id, s.correlation_id), s.machine,
             _status_cell(s, waits(s)), s.state, str(s.steps), str(s.retries),
             clock_time(s.time) if wide else clock_time(s.time)[:8], s.error or "") for s in states]
    return FittedTable(MACHINE_COLUMNS, rows, title, wide)


def _status_cell(state: MachineState, wait: str | None) -> Text:
    """The status, or what the running machine waits for instead of ``running``."""
    if wait:
        return Text(wait, style="yellow")
    return Text(state.status, style=STATUS_STYLE.get(state.status, ""))


RECORD_COLUMNS = (Col("position", 50), Col("time", 70), Col("kind"), Col("steps", 90, justify="right"),
                  Col("retries", 40, justify="right"), Col("state"), Col("event", 95), Col("error", 85, wrap=True),
                  Col("folded", 60, wrap=True))


def records_table(rows: Sequence[tuple[str, Event, MachineState | None]], title: str | None = None,
                  wide: bool = False) -> FittedTable:
    """Log records with, for each, the machine as folded after it, fitted to the terminal."""
    cells = []
    for position, ev, folded in rows:
        error = f"{ev.error_type}: {ev.error_message}" if ev.error_type else ""
        after = f"{folded.status} @ {folded.state} (steps {folded.steps})" if folded else ""
        cells.append((position, clock_time(ev.time), ev.kind, str(ev.steps), str(ev.retries), ev.state,
                      ev.event or "", error, after))
    return FittedTable(RECORD_COLUMNS, cells, title, wide)
