"""How the CLI shows things: live transition lines, machine tables, JSON documents."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.text import Text

from eventlog.event import COMPLETED, FAILED, RETRY, Event
from projections.state import MachineState

from .ids import short_ids
from .tables import Col, FittedTable

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


def _with_error(line: Text, ev: Event, style: str) -> RenderableType:
    """The line, then the record's error wrapped between words (even on a soft-wrapping console)."""
    error = Text(f"{ev.error_type}: {ev.error_message}", style=style, no_wrap=False, overflow="fold")
    return Group(line, Padding(error, (0, 0, 0, ERROR_INDENT), expand=False))


def transition_line(record: Event, out: Event | None, outcome: str) -> RenderableType:
    """``time  id  state --event--> state  (retries)  outcome`` for one handled record; a failed step's
    error (``Type: action failed: message``) follows, indented and wrapped to the terminal."""
    line = Text()
    line.append(clock_time(out.time if out is not None else record.time), style="dim")
    line.append("  ")
    line.append(f"{short_id(record.correlation_id):<8}", style="bold")
    line.append("  ")
    line.append(record.state)
    line.append(f" --{record.event or 'start'}--> ", style="dim")
    if out is None:
        line.append("?")
    elif out.kind == RETRY:
        line.append("(failed)", style="yellow")
    elif out.kind == FAILED and out.steps == record.steps:  # its last attempt failed: it went nowhere
        line.append("(failed)", style="bold red")
    else:
        line.append(out.state)
        local = out.steps - record.steps - 1
        if local > 0:
            line.append(f" (+{local} local)", style="dim")
    if record.retries:
        line.append(f"  [attempt {record.retries + 1}]", style="yellow")
    line.append("  ")
    if out is not None and out.kind == RETRY:  # the error (its message names the action) on a line of its own
        line.append(f"will retry (attempt {out.retries + 1})", style="yellow")
        return _with_error(line, out, "yellow")
    line.append(outcome, style=OUTCOME_STYLE.get(outcome, ""))
    if out is not None and out.kind == FAILED:
        return _with_error(line, out, "red")
    elif out is not None and out.kind not in (COMPLETED,) and out.event:
        line.append(f"  next: {out.event}", style="dim")
    return line


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
        ("retries run", f"{stats.retries_moved} (due retries put back on the log)"),
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
                   ids: dict[str, str] | None = None) -> FittedTable:
    """One row per machine, fitted to the terminal; ids short (``ids``: the short form of each, default
    ``short_ids`` of those shown) unless ``wide``."""
    if ids is None:
        ids = short_ids(s.correlation_id for s in states)
    rows = [(s.correlation_id if wide else ids.get(s.correlation_id, s.correlation_id), s.machine,
             Text(s.status, style=STATUS_STYLE.get(s.status, "")), s.state, str(s.steps), str(s.retries),
             clock_time(s.time) if wide else clock_time(s.time)[:8], s.error or "") for s in states]
    return FittedTable(MACHINE_COLUMNS, rows, title, wide)


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
