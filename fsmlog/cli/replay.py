"""``fsmlog replay``: rebuild one machine from snapshot + log, find stalled machines, launch the KCL app.

``machine ID`` folds the machine's latest snapshot with the log after it and
shows both side by side; ``scan`` folds the whole log (or the projection file
the KCL daemon writes) and lists machines that stopped moving; both only look
unless ``--redispatch`` is given, which appends the pending step again as a
retry (the engine's idempotency flag makes a step that already ran a no-op).
``check NEW_FSM.yaml`` folds the log and says, for every running machine,
whether the new definitions would handle its next record, upgrade it or park
it (``replay.check``). ``kcl-properties`` writes the MultiLangDaemon's
properties for the configured Kinesis stream and prints the command that
starts it.

The fold needs no definitions, so only ``check`` needs an FSM.yaml.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.text import Text

from eventlog.errors import FsmlogError

from . import UsageError, load_definitions, open_runtime
from . import output as out
from .ids import resolve_machine, short_ids
from .tables import Col, FittedTable

STALLED_ROWS = 50  # rows of the stalled table (--json lists every one)
EXIT_STALLED = 3  # --fail-on-stalled: the scan found stalled machines
DEFAULT_PROPERTIES = "fsmlog-replay.properties"
DEFAULT_APPLICATION = "fsmlog-replay"
DEFAULT_STATE = ".fsmlog/replay-projections.db"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="rebuild machines from snapshot + log, find and redispatch stalled ones")
    cmds = p.add_subparsers(dest="replay_command", metavar="ACTION")

    c = cmds.add_parser("machine", help="rebuild one machine from its latest snapshot + the log after it "
                                        "(dry run unless --redispatch)")
    c.add_argument("id", help="machine id, or any unique prefix of one")
    c.add_argument("--redispatch", action="store_true",
                   help="append the pending step again as a retry (retries + 1)")
    c.add_argument("--fsm", metavar="FSM.yaml", default=None,
                   help="optional: check the machine is still defined there (and read settings beside it)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_machine)

    c = cmds.add_parser("scan", help="read the whole log (both streams when there is a secondary) and the "
                                     "snapshots, summarize machines and list the stalled ones")
    c.add_argument("--stalled-after", default="15m", metavar="DURATION",
                   help="running with no record for longer than this is stalled: 90s, 15m, 2h, 1d (default 15m)")
    c.add_argument("--redispatch", action="store_true", help="redispatch every stalled machine")
    c.add_argument("--refresh-snapshots-older-than", default=None, metavar="DURATION",
                   help="write a fresh snapshot for machines whose snapshot is behind and older than this")
    c.add_argument("--projections", default=None, metavar="PATH",
                   help="read the projection file the KCL daemon writes instead of the log")
    c.add_argument("--fail-on-stalled", action="store_true",
                   help=f"exit {EXIT_STALLED} when any machine is stalled (for cron and CI)")
    c.add_argument("--json", action="store_true", help="one JSON document on stdout (progress stays on stderr)")
    c.set_defaults(func=cmd_scan)

    c = cmds.add_parser("kcl-properties", help="write the KCL MultiLangDaemon properties for the Kinesis stream "
                                               "and print the command that launches it")
    c.add_argument("--side", choices=("primary", "secondary"), default="primary",
                   help="the stream to read: a secondary stream needs its own daemon (default primary)")
    c.add_argument("--out", default=None, metavar="PATH",
                   help=f"properties file to write (default {DEFAULT_PROPERTIES}; "
                        f"fsmlog-replay-secondary.properties for --side secondary)")
    c.add_argument("--application", default=None, metavar="NAME",
                   help=f"KCL application name, also its DynamoDB lease table (default {DEFAULT_APPLICATION}; "
                        f"{DEFAULT_APPLICATION}-secondary for --side secondary)")
    c.add_argument("--state", default=DEFAULT_STATE, metavar="PATH",
                   help=f"projection file the daemon's processors write (default {DEFAULT_STATE})")
    c.set_defaults(func=cmd_kcl_properties)

    c = cmds.add_parser("check", help="would new definitions handle, upgrade or park each running machine's "
                                      "next record? (exit 1 if any would be parked)")
    c.add_argument("fsm", metavar="NEW_FSM.yaml", help="the definitions about to be deployed")
    c.add_argument("--json", action="store_true", help="one JSON document on stdout (progress stays on stderr)")
    c.set_defaults(func=cmd_check)

    p.set_defaults(func=lambda args: _usage())


def _usage() -> int:
    raise UsageError("replay needs an action: machine ID, scan, check NEW_FSM.yaml or kcl-properties "
                     "(`fsmlog replay -h` describes them)")


# ---------------------------------------------------------------- shared


def human_duration(seconds: float) -> str:
    """``45s``, ``15m``, ``12m 5s``, ``3h 20m``, ``2d 4h``: two units at most, enough to judge a stall."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        big, unit, rest, small = s // 60, "m", s % 60, "s"
    elif s < 86400:
        big, unit, rest, small = s // 3600, "h", s % 3600 // 60, "m"
    else:
        big, unit, rest, small = s // 86400, "d", s % 86400 // 3600, "h"
    return f"{big}{unit}" + (f" {rest}{small}" if rest else "")


def _duration(text: str, option: str) -> float:
    from replay.errors import ReplayError
    from replay.scan import parse_duration

    try:
        return parse_duration(text)
    except ReplayError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _stream_names(rt: Any) -> str:
    """The stream sources a scan reads: the primary's name, plus the secondary's when there is one."""
    from eventlog.sides import readable_sides

    names = [getattr(b, "name", str(b)) for _, b in readable_sides(rt.log)]
    return " + ".join(names) or rt.log.name


# ---------------------------------------------------------------- machine


def _state_fields(state: Any, position: str | None, now: float) -> dict[str, str]:
    if state is None:
        return {}
    return {
        "machine": state.machine,
        "status": state.status,
        "state": state.state,
        "event": state.event or "",
        "steps": str(state.steps),
        "retries": str(state.retries),
        "last record": state.last.kind,
        "updated": f"{_when(state.time)} ({human_duration(now - state.time)} ago)",
        "error": state.error or "",
        "definition hash": state.definition_hash,
        "log position": position or "",
    }


def comparison_table(rebuilt: Any, now: float) -> Any:
    """field | snapshot | rebuilt, with the fields the tail changed highlighted."""
    from rich.table import Table

    snap_pos = rebuilt.snapshot.position if rebuilt.snapshot is not None else None
    before = _state_fields(rebuilt.snapshot_state, snap_pos, now)
    after = _state_fields(rebuilt.rebuilt_state, rebuilt.position, now)
    title = f"machine {rebuilt.correlation_id}: snapshot vs. rebuilt"
    table = Table(title=title)
    table.add_column("field", style="bold")
    table.add_column("snapshot", overflow="fold")
    table.add_column("rebuilt", overflow="fold")
    for name, value in after.items():
        old = before.get(name)
        if old is None:
            old_cell = Text("(no snapshot)", style="dim")
        else:
            old_cell = Text(old)
        changed = old is not None and old != value and name != "updated"
        if name == "status":
            style = out.STATUS_STYLE.get(value, "")
        else:
            style = "yellow" if changed else ""
        table.add_row(name, old_cell, Text(value, style=style))
    return table


def _tail_line(rebuilt: Any) -> str:
    n = len(rebuilt.tail_events)
    if rebuilt.snapshot is None:
        line = f"no snapshot: folded {n} record(s) from the start of the log"
    else:
        line = f"folded {n} tail record(s) after snapshot position {rebuilt.snapshot.position}"
    if rebuilt.position is not None:
        line += f" (last position read: {rebuilt.position})"
    if rebuilt.bad_records:
        line += f"; {rebuilt.bad_records} undecodable or misfiled record(s) skipped"
    for warning in rebuilt.warnings:
        line += f"; warning: {warning}"
    return line


def rebuild_machine(rt: Any, cid: str, *, redispatch: bool, now: float,
                    definitions: Any = None) -> tuple[Any, Any, Any]:
    """What ``replay machine`` does: (rebuilt, the record appended, the record a redispatch would append).

    Without ``redispatch`` nothing is written; the console's redispatch runs this too."""
    from replay.rebuild import rebuild, retry_record
    from replay.rebuild import redispatch as append_retry

    rebuilt = rebuild(cid, rt.services, definitions=definitions, settings=rt.settings)
    state = rebuilt.rebuilt_state
    appended = append_retry(rebuilt, rt.services) if redispatch and not state.terminal else None
    pending = None if redispatch else retry_record(state, lambda: now)
    return rebuilt, appended, pending


def machine_document(rebuilt: Any, appended: Any, pending: Any) -> dict[str, Any]:
    """What ``replay machine --json`` prints (and the console's redispatch returns)."""
    return {
        "machine": rebuilt.as_dict(),
        "ended": rebuilt.rebuilt_state.terminal,
        "written": appended is not None,
        "redispatched": None if appended is None else out.event_dict(appended, with_context=False),
        "would_append": None if pending is None else out.event_dict(pending, with_context=False),
    }


def cmd_machine(args: argparse.Namespace) -> int:
    definitions = load_definitions(args.fsm) if args.fsm else None
    now = time.time()
    with open_runtime(args, fsm_path=args.fsm) as rt:
        cid = resolve_machine(rt, args.id)
        rebuilt, appended, pending = rebuild_machine(rt, cid, redispatch=args.redispatch, now=now,
                                                     definitions=definitions)
        log_name = rt.log.name
    state = rebuilt.rebuilt_state

    if args.json:
        out.print_json(machine_document(rebuilt, appended, pending))
        return 0

    con = out.console()
    con.print(comparison_table(rebuilt, now))
    con.print(_tail_line(rebuilt), style="dim", markup=False)
    if state.terminal:
        con.print(Text.assemble(
            "machine has ended: ", (state.status, out.STATUS_STYLE.get(state.status, "")),
            f" in state {state.state!r}; nothing to redispatch, nothing was written"))
        return 0
    step = f"fire {state.event!r} from state {state.state!r}" if state.event else f"start in state {state.state!r}"
    waiting = f"step {state.steps} ({step}), last record {human_duration(now - state.time)} ago"
    if appended is None:
        con.print(Text.assemble(("dry run: nothing was written. ", "bold"), f"The machine waits on {waiting}."))
        con.print(Text.assemble("To run that step again, append it as a retry: ",
                                (f"fsmlog replay machine {shlex.quote(args.id)} --redispatch", "bold")))
        return 0
    con.print(Text.assemble(
        ("redispatched: ", "bold yellow"),
        f"appended a retry record to {log_name}: step {appended.steps}, state {appended.state!r}, "
        f"event {repr(appended.event) if appended.event else '(start)'}, "
        f"retries {appended.retries - 1} -> {appended.retries}"))
    con.print("A worker runs it next; if that step had already run, its idempotency flag makes it a no-op.",
              style="dim")
    return 0


# ---------------------------------------------------------------- scan


def _scan_log(rt: Any, now: float, stalled_after_s: float) -> Any:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from replay.scan import scan

    columns = (SpinnerColumn(), TextColumn("reading {task.description}"),
               TextColumn("[bold]{task.completed:,.0f}[/bold] records"), TimeElapsedColumn())
    with Progress(*columns, console=out.err_console(), transient=False) as progress:
        task = progress.add_task(_stream_names(rt), total=None)
        result = scan(rt.log, rt.services.checkpoints, now=now, stalled_after_s=stalled_after_s,
                      progress=lambda n: progress.update(task, completed=n))
        progress.update(task, completed=result.records)
    return result


def summary_table(result: Any, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("machine", style="bold")
    styles = {"stalled": "bold yellow", **out.STATUS_STYLE}
    for col in ("running", "stalled", "completed", "failed", "aborted", "total"):
        table.add_column(col, justify="right", style=styles.get(col, ""))
    for row in result.summary():
        table.add_row(Text(row["machine"]), *(str(row[c]) for c in
                                              ("running", "stalled", "completed", "failed", "aborted", "total")))
    return table


STALLED_COLUMNS = (Col("id"), Col("machine", 70), Col("state"), Col("event", 90), Col("stuck for"),
                   Col("last record", 60, wrap=True), Col("retries used", 50, justify="right"))


def stalled_table(stalled: list[Any], title: str, snapshot_only: frozenset[str] = frozenset()) -> Any:
    """The stalled machines, fitted to the terminal, ids short (``--json`` has them whole)."""
    ids = short_ids(st.state.correlation_id for st in stalled)
    rows = []
    for st in stalled:
        s = st.state
        last = Text(s.last.kind)
        if s.correlation_id in snapshot_only:
            last.append(" (snapshot only)", style="yellow")
        rows.append((ids[s.correlation_id], Text(s.machine), Text(s.state), Text(s.event or "(start)"),
                     Text(human_duration(st.stuck_s), style="yellow"), last, str(s.retries)))
    return FittedTable(STALLED_COLUMNS, rows, title)


def _redispatch_all(stalled: list[Any], rt: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Redispatch each stalled machine on its own, so one that cannot be rebuilt does not stop the rest."""
    from replay.rebuild import redispatch_many

    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for st in stalled:
        cid = st.correlation_id
        try:
            ((rebuilt, ev),) = redispatch_many([cid], rt.services, settings=rt.settings, dry_run=False)
        except FsmlogError as exc:  # ReplayError and backend errors alike
            rows.append({"correlation_id": cid, "result": "error", "error": str(exc)})
            errors.append(f"{cid}: {exc}")
            continue
        s = rebuilt.rebuilt_state
        if ev is None:
            rows.append({"correlation_id": cid, "result": f"ended meanwhile ({s.status})", "steps": s.steps,
                         "state": s.state, "event": s.event, "retries": s.retries})
        else:
            rows.append({"correlation_id": cid, "result": "redispatched", "steps": ev.steps, "state": ev.state,
                         "event": ev.event, "retries": ev.retries})
    return rows, errors


def redispatch_table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title=f"redispatched ({sum(r['result'] == 'redispatched' for r in rows)} of {len(rows)})")
    for col in ("id", "result", "step", "state", "event", "retries"):
        table.add_column(col, overflow="fold")
    ids = short_ids(r["correlation_id"] for r in rows)
    for r in rows:
        style = {"redispatched": "yellow", "error": "bold red"}.get(r["result"], "dim")
        detail = r.get("error", "")
        table.add_row(Text(ids[r["correlation_id"]]), Text(r["result"] if not detail else f"error: {detail}",
                                                      style=style),
                      str(r.get("steps", "")), Text(r.get("state") or ""),
                      Text(r.get("event") or ("(start)" if "steps" in r else "")),
                      str(r.get("retries", "")))
    return table


def cmd_scan(args: argparse.Namespace) -> int:
    from replay.scan import refresh_snapshots, scan_projections, with_snapshots

    stalled_after_s = _duration(args.stalled_after, "--stalled-after")
    max_age_s = None
    if args.refresh_snapshots_older_than is not None:
        max_age_s = _duration(args.refresh_snapshots_older_than, "--refresh-snapshots-older-than")
        if args.projections:
            raise UsageError("--refresh-snapshots-older-than needs the log's positions, which a projection file "
                             "does not keep; run it without --projections")
    now = time.time()
    doc: dict[str, Any] = {"stalled_after_s": stalled_after_s}
    redispatched: list[dict[str, Any]] | None = None
    errors: list[str] = []
    refreshed = None

    if args.projections:
        path = Path(args.projections)
        if not path.is_file():
            raise FsmlogError(f"no projection file at {path}; the KCL daemon writes it (see `fsmlog replay "
                              f"kcl-properties --state {path}`)")
        result = scan_projections(path, now=now, stalled_after_s=stalled_after_s)
        doc.update(source="projections", projections=str(path))
        with open_runtime(args) as rt:
            try:  # the snapshots: running machines whose records left the stream before the daemon read them
                result = with_snapshots(result, rt.services.checkpoints, now=now, stalled_after_s=stalled_after_s)
            except FsmlogError as exc:
                result = replace(result, notes=[*result.notes, f"the checkpoint store could not be read: {exc}"])
            if args.redispatch and result.stalled:
                redispatched, errors = _redispatch_all(result.stalled, rt)
                doc["log"] = rt.log.name
    else:
        with open_runtime(args) as rt:
            result = _scan_log(rt, now, stalled_after_s)
            doc.update(source="log", log=_stream_names(rt), position=result.position,
                       sides=result.side_positions)
            if max_age_s is not None:
                refreshed = refresh_snapshots(result, rt.services.checkpoints, now=now, max_age_s=max_age_s)
            if args.redispatch and result.stalled:
                redispatched, errors = _redispatch_all(result.stalled, rt)
    if args.redispatch and redispatched is None:
        redispatched = []

    rows = []
    only_snapshot = set(result.from_checkpoints)
    for st in result.stalled:
        row = st.as_row()
        row["stuck_for"] = human_duration(st.stuck_s)
        row["snapshot_only"] = st.correlation_id in only_snapshot
        rows.append(row)
    doc.update(records=result.records, bad_records=result.bad_records, machines=len(result.states),
               summary=result.summary(), stalled=rows, from_checkpoints=result.from_checkpoints,
               notes=result.notes)
    if refreshed is not None:
        doc["snapshots"] = {"written": len(refreshed.written), "up_to_date": refreshed.up_to_date,
                            "without_position": refreshed.skipped_no_position}
    if redispatched is not None:
        doc["redispatched"] = redispatched

    if args.json:
        out.print_json(doc)
    else:
        _print_scan(result, doc, refreshed, redispatched, args, stalled_after_s)

    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise FsmlogError(f"{len(errors)} of {len(result.stalled)} stalled machine(s) could not be redispatched: "
                          f"{errors[0]}{more}")
    if args.fail_on_stalled and result.stalled:
        return EXIT_STALLED
    return 0


def _print_scan(result: Any, doc: dict[str, Any], refreshed: Any, redispatched: list[dict[str, Any]] | None,
                args: argparse.Namespace, stalled_after_s: float) -> None:
    con = out.console()
    where = doc.get("projections") if doc["source"] == "projections" else doc["log"]
    counts = f"{len(result.states)} machine(s) from {result.records:,} record(s) of {where}"
    if result.bad_records:
        counts += f", {result.bad_records} undecodable record(s) skipped"
    if result.states:
        con.print(summary_table(result, counts))
    else:
        con.print(f"no machines: {result.records:,} record(s) read from {where}", markup=False)
    if result.from_checkpoints:  # wrapped at the console's width (80 columns when not a terminal)
        con.print(f"{len(result.from_checkpoints)} running machine(s) known only from their snapshot "
                  f"(no record left in the stream), e.g. {result.from_checkpoints[0]}", style="yellow",
                  markup=False, soft_wrap=False)
    for note in result.notes:
        con.print(f"note: {note}", style="yellow", markup=False, soft_wrap=False)
    threshold = human_duration(stalled_after_s)
    if not result.stalled:
        con.print(f"no stalled machines (none running without a record for more than {threshold})", style="green")
    else:
        shown = result.stalled[:STALLED_ROWS]
        title = f"{len(result.stalled)} stalled machine(s): running, no record for more than {threshold}"
        if len(shown) < len(result.stalled):
            title += f" (longest stuck {len(shown)} shown; --json lists all)"
        con.print(stalled_table(shown, title, frozenset(result.from_checkpoints)))
    if refreshed is not None:
        con.print(f"snapshots: wrote {len(refreshed.written)} fresh snapshot(s); {refreshed.up_to_date} up to date"
                  + (f", {refreshed.skipped_no_position} without a log position"
                     if refreshed.skipped_no_position else ""))
    if redispatched is not None:
        if redispatched:
            con.print(redispatch_table(redispatched))
            con.print("A worker runs each redispatched step next; a step that had already run is a no-op "
                      "(idempotency flag).", style="dim")
        else:
            con.print("nothing to redispatch")
    elif result.stalled:
        con.print(Text.assemble(("dry run: nothing was written. ", "bold"),
                                "To move the stalled machines on, run the same scan with ",
                                ("--redispatch", "bold"), "."))


# ---------------------------------------------------------------- kcl-properties


def cmd_kcl_properties(args: argparse.Namespace) -> int:
    from replay.kcl_properties import launch_command, write_properties_for

    from . import settings_for

    settings = settings_for(args)
    side = args.side
    suffix = "" if side == "primary" else "-secondary"
    application = args.application or DEFAULT_APPLICATION + suffix
    state = Path(args.state).expanduser().absolute()
    props = Path(args.out or DEFAULT_PROPERTIES.replace(".properties", f"{suffix}.properties")).expanduser().absolute()
    write_properties_for(settings, props, application_name=application, state_path=state, side=side)
    con = out.console()
    con.print(f"wrote {props} for {settings.source('STREAM', side.upper())} "
              f"(application {application!r}, projections {state})", markup=False)
    command = launch_command(props)  # raises a one-line error when amazon-kclpy (its jars) is missing
    con.print("launch the daemon with:", style="bold")
    print(shlex.join(command), flush=True)
    if side == "primary" and settings.source("STREAM", "SECONDARY"):
        con.print("the stream has a secondary: run a second daemon for it too "
                  "(`fsmlog replay kcl-properties --side secondary`)", style="yellow", markup=False)
    con.print(f"It runs the KCL MultiLangDaemon (Java): one lease per shard in DynamoDB table "
              f"{application!r}, one `python -m replay.kcl_processor` per shard folding every record into "
              f"{state}; then `fsmlog replay scan --projections {state}` lists the stalled machines.",
              style="dim", markup=False)
    if shutil.which("java") is None:
        out.err_console().print("note: no `java` on PATH; the daemon needs a Java runtime", markup=False)
    return 0


# ---------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    """Would the new definitions handle, upgrade or park each running machine's next record?"""
    from replay.check import OUTCOMES, check_states

    definitions = load_definitions(args.fsm)
    now = time.time()
    with open_runtime(args, fsm_path=args.fsm) as rt:
        result = _scan_log(rt, now, float("inf"))
        names = _stream_names(rt)
    report = check_states(result.states.values(), definitions, result.notes)
    if args.json:
        out.print_json({"fsm": args.fsm, "log": names, "records": result.records, **report.as_dict()})
        return 1 if report.parked else 0
    from rich.table import Table

    con = out.console()
    con.print(f"{len(report.verdicts)} running machine(s) in {names} checked against {args.fsm} "
              f"({report.ended} ended, nothing to check)", soft_wrap=False)
    for note in report.notes:
        con.print(Text(f"note: {note}", style="yellow"))
    if report.verdicts:
        table = Table(title="next record under the new definitions")
        table.add_column("machine", style="bold", overflow="fold")
        styles = {"handled": "green", "upgraded": "yellow", "parked": "bold red"}
        for col in (*OUTCOMES, "running"):
            table.add_column(col, justify="right", style=styles.get(col, ""))
        for row in report.summary():
            table.add_row(Text(row["machine"]), *(str(row[c]) for c in (*OUTCOMES, "running")))
        con.print(table)
    if not report.parked:
        con.print("none would be parked", style="green")
        return 0
    table = Table(title=f"would be parked ({len(report.parked)})")
    for col in ("id", "machine", "state", "event", "reason"):
        table.add_column(col, overflow="fold")
    for v in report.parked[:STALLED_ROWS]:
        table.add_row(Text(out.short_id(v.correlation_id)), Text(v.machine), Text(v.state), Text(v.event or "(start)"),
                      Text(v.reason or "", style="red"))
    con.print(table)
    if len(report.parked) > STALLED_ROWS:
        con.print(f"... and {len(report.parked) - STALLED_ROWS} more (--json lists every one)", style="dim")
    con.print("Keep those states and events in the new definitions, or let the machines end before "
              "deploying.", style="dim", soft_wrap=False)
    return 1
