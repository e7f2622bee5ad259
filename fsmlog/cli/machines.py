"""Commands about machines: run, start, worker, status, history, abort, validate, graph."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from typing import TYPE_CHECKING, Any, cast

from eventlog.codec import decode
from eventlog.errors import DecodeError, FsmlogError
from projections.state import MachineState

from . import Interrupted, UsageError, load_definitions, local_log, open_runtime, readable_log
from . import output as out
from .health import fault_health, health_line
from .ids import resolve_machine, short_ids
from .waits import WaitWords, scheduled_line

if TYPE_CHECKING:
    from eventlog.event import Event
    from eventlog.log import EventLog, LogRecord
    from projections.state import Snapshot

    from . import Runtime

READ_PAGE = 5000
TABLE_ROWS = 50
TAIL_RECORDS = 10
ID_HELP = "machine id, or any unique prefix of one (tables show 8 characters)"
WIDE_HELP = "full ids and every column, however wide the terminal"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="start machines and drive them to the end with an in-process worker")
    p.add_argument("fsm", metavar="FSM.yaml")
    p.add_argument("--machine", required=True, help="machine name from FSM.yaml")
    p.add_argument("--context", default=None, help="initial user context as a JSON object")
    p.add_argument("--count", type=int, default=1, help="how many machines to start (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON document with every final status")
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds (default 120)")
    p.add_argument("--batch", type=int, default=100, help="records per batch (default 100)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("start", help="append a start record for one machine and print its id")
    p.add_argument("fsm", metavar="FSM.yaml")
    p.add_argument("--machine", required=True)
    p.add_argument("--context", default=None, help="initial user context as a JSON object")
    p.add_argument("--id", default=None, help="correlation id to use (default: a new random one)")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("worker", help="run the local worker (the Lambda trigger's stand-in) until Ctrl-C")
    p.add_argument("fsm", metavar="FSM.yaml")
    p.add_argument("--batch", type=int, default=100, help="records per batch (default 100)")
    p.add_argument("--once", action="store_true", help="handle what is there (and due retries), then exit")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", help="one machine's state, or a table of every machine in the embedded log")
    p.add_argument("id", nargs="?", default=None, help=ID_HELP)
    p.add_argument("--json", action="store_true")
    p.add_argument("--wide", action="store_true", help=WIDE_HELP)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("history", help="every record of one machine, with its folded state after each")
    p.add_argument("id", help=ID_HELP)
    p.add_argument("--json", action="store_true")
    p.add_argument("--wide", action="store_true", help=WIDE_HELP)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("abort", help="stop a running machine (no further step runs)")
    p.add_argument("id", help=ID_HELP)
    p.add_argument("--reason", default="", help="recorded in the aborted record")
    p.set_defaults(func=cmd_abort)

    p = sub.add_parser("validate", help="check an FSM.yaml: print every problem, or 'ok' with hashes")
    p.add_argument("fsm", metavar="FSM.yaml")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("graph", help="print a machine as Graphviz DOT or Mermaid")
    p.add_argument("fsm", metavar="FSM.yaml")
    p.add_argument("--machine", default=None, help="machine name (default: every machine)")
    p.add_argument("--id", default=None, help="highlight this running machine's current state (" + ID_HELP + ")")
    p.add_argument("--format", choices=("dot", "mermaid"), default="dot")
    p.set_defaults(func=cmd_graph)


def parse_context(text: str | None) -> dict[str, Any]:
    """``--context``: a JSON object, or a one-line usage error showing one."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--context is not valid JSON ({exc.msg} at character {exc.pos}): {text!r}; give a "
                         "JSON object like '{\"amount\": 10}'") from None
    if not isinstance(value, dict):
        raise UsageError(f"--context must be a JSON object like '{{\"amount\": 10}}', got {type(value).__name__}")
    return value


# ---------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    context = parse_context(args.context)
    definitions = load_definitions(args.fsm)
    definitions.machine(args.machine)  # unknown machine: one clear error before anything is written
    pending: set[str] = set()
    con = out.console()
    waits = WaitWords(definitions)

    def on_step(record: Event, nxt: Event | None, outcome: str) -> None:
        if not args.json:
            wait = None if nxt is None else waits(MachineState(nxt))
            con.print(out.transition_line(record, nxt, outcome, wait))
        if nxt is not None and nxt.terminal:
            pending.discard(record.correlation_id)

    from handlers.worker import Worker

    with open_runtime(args, definitions, fsm_path=args.fsm, on_step=on_step) as rt:
        log = local_log(rt, "fsmlog run")
        engine = rt.engine
        ids = engine.start_many(args.machine, [context] * args.count)
        pending.update(ids)
        if not args.json:
            con.print(f"started {len(ids)} {args.machine!r} machine(s) on {log.name}", style="bold")
        deadline = time.monotonic() + args.timeout

        def refresh() -> None:  # machines another process moved (or aborted) end here too
            for cid in list(pending):
                state = engine.status(cid)
                if state is not None and state.terminal:
                    pending.discard(cid)

        worker = Worker(engine, log, batch_size=args.batch)
        try:  # the first Ctrl-C stops the worker after its batch; a second one lands here
            worker.run(until=lambda: not pending or time.monotonic() > deadline, on_idle=refresh)
        except KeyboardInterrupt:
            pass
        if pending:
            refresh()
        states = {cid: engine.status(cid) for cid in ids}
    return _finish_run(args, states, pending, worker.stopping, worker.stats.retries_moved)


def _finish_run(args: argparse.Namespace, states: dict[str, MachineState | None], pending: set[str],
                interrupted: bool, retries_moved: int) -> int:
    """What ``run`` says at the end (the JSON document, or the counts), and how it exits: 0 when every
    machine completed, 1 otherwise; an error naming what is left when it timed out or was interrupted."""
    timed_out = bool(pending) and not interrupted
    final = [s for s in states.values() if s is not None]
    counts = out.status_counts(final)
    ok = not pending and all(s.status == "completed" for s in final) and len(final) == len(states)
    if args.json:
        out.print_json({
            "machine": args.machine,
            "count": len(states),
            "ok": ok,
            "timed_out": timed_out,
            "interrupted": interrupted,
            "counts": counts,
            "machines": [{**s.as_dict(), "context": s.context} for s in final],
        })
    else:
        con = out.console()
        con.print(out.counts_text(counts))
        if retries_moved:
            con.print(f"retries and timers run: {retries_moved}", style="yellow")
    if interrupted and pending:
        raise Interrupted(
            f"interrupted: {len(pending)} of {len(states)} machine(s) still running (e.g. {sorted(pending)[0]}); "
            f"continue them with `{continue_command(args)}` (without --once: until Ctrl-C)"
        )
    if timed_out:
        raise FsmlogError(
            f"timed out after {args.timeout:g}s with {len(pending)} of {len(states)} machine(s) still running "
            f"(e.g. {sorted(pending)[0]}); raise --timeout or see `fsmlog status ID`"
        )
    return 0 if ok else 1


def continue_command(args: argparse.Namespace) -> str:
    """The ``fsmlog worker --once`` command line that goes on with what ``args``' command left running."""
    argv = ["fsmlog"]
    if args.settings:
        argv += ["--settings", args.settings]
    if args.db:
        argv += ["--db", args.db]
    return shlex.join([*argv, "worker", args.fsm, "--once"])


# ---------------------------------------------------------------- start / worker


def cmd_start(args: argparse.Namespace) -> int:
    context = parse_context(args.context)
    definitions = load_definitions(args.fsm)
    with open_runtime(args, definitions, fsm_path=args.fsm) as rt:
        cid = rt.engine.start(args.machine, context, args.id)
    print(cid)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from rich.live import Live

    from handlers.worker import Worker

    definitions = load_definitions(args.fsm)
    outcomes: dict[str, int] = {}

    def on_step(record: Event, nxt: Event | None, outcome: str) -> None:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    with open_runtime(args, definitions, fsm_path=args.fsm, on_step=on_step) as rt:
        log = local_log(rt, "fsmlog worker")
        worker = Worker(rt.engine, log, batch_size=args.batch)

        if args.once:
            worker.run_until_drained()
            con = out.console()
            for line in out.worker_summary(worker.stats, outcomes):
                con.print(line, markup=False)
            waiting = scheduled_line(rt.services.retries, time.time())
            if waiting is not None:
                con.print(f"{waiting}:\nrun this command again then, or without --once to keep going",
                          style="yellow", markup=False)
            return 0
        con = out.err_console()
        streams = " + ".join(f"{getattr(b, 'name', b)}" for _, b in worker.sides)
        con.print(f"worker {worker.owner} on {streams} (Ctrl-C to stop)", style="bold", markup=False)
        for side, name in worker.unclaimable:
            con.print(f"note: the {side} stream {name} cannot be claimed locally; its own trigger "
                      "(the Lambda, or `fsmlog dev`) handles it", style="yellow", markup=False)

        def counter() -> str:
            return out.worker_counter(worker.stats, outcomes)

        with Live(counter(), console=con, refresh_per_second=4, transient=True) as live:
            worker.run(on_batch=lambda result: live.update(counter()), on_idle=lambda: live.update(counter()))
        con.print("stopped", style="bold")
        for line in out.worker_summary(worker.stats, outcomes):
            con.print(line, markup=False)
    return 0


# ---------------------------------------------------------------- status / history / abort


def _all_states(log: EventLog) -> list[MachineState]:
    """Every machine folded from every readable side of the stream source, newest first."""
    from eventlog.sides import pages
    from projections.fold import fold_records

    states: dict[str, MachineState] = {}
    for page in pages(log, READ_PAGE):
        states = fold_records(states, (r.data for r in page))
    return sorted(states.values(), key=lambda s: s.time, reverse=True)


def _streams(log: EventLog) -> str:
    """The stream sources read: the primary's name, and the secondary's when there is one."""
    from eventlog.sides import readable_sides

    return " + ".join(getattr(b, "name", str(b)) for _, b in readable_sides(log)) or log.name


def _one_machine(rt: Runtime, cid: str) -> tuple[MachineState | None, Snapshot | None, list[LogRecord]]:
    """(state, snapshot, tail records) from the snapshot and every side of the stream after it."""
    from eventlog.sides import readable_sides
    from projections.fold import fold
    from replay.rebuild import read_tail

    snap = rt.engine.load_snapshot(cid)
    if not readable_sides(rt.log):  # a stream fsmlog cannot read back: the engine's answer is all there is
        return rt.engine.status(cid), snap, []
    events = []
    for r in read_tail(rt.log, cid, snap.position if snap else None, settings=rt.settings,
                       on_gap=lambda message: out.err_console().print(f"warning: {message}", markup=False)):
        try:
            ev = decode(r.data)
        except DecodeError:
            continue
        if ev.correlation_id == cid:
            events.append((ev.time, ev.steps, r, ev))
    events.sort(key=lambda e: (e[0], e[1]))
    state = fold(snap.state if snap else None, (ev for *_, ev in events))
    return state, snap, [r for _, _, r, _ in events]


def cmd_status(args: argparse.Namespace) -> int:
    with open_runtime(args) as rt:
        if args.id is None:
            states = _all_states(readable_log(rt, "fsmlog status"))
            counts = out.status_counts(states)
            where = _streams(rt.log)
            health = fault_health(rt.services.metrics)
            if args.json:
                out.print_json({"log": where, "counts": counts, "machines": [s.as_dict() for s in states],
                                "health": health})
                return 0
            con = out.console()
            shown = states[:TABLE_ROWS]
            title = f"{len(states)} machine(s) in {where}"
            if len(states) > len(shown):
                title += f" (newest {len(shown)} shown)"
            ids = short_ids(s.correlation_id for s in states)  # unique among all, not only those shown
            con.print(out.machines_table(shown, title, wide=args.wide, ids=ids))
            con.print(out.counts_text(counts))
            con.print(health_line(health, rt.services.metrics.name), markup=False,
                      style="yellow" if health and (health.get("failovers") or health.get("lease_lost")) else "dim")
            return 0
        cid = resolve_machine(rt, args.id)
        state, snap, tail = _one_machine(rt, cid)
        if state is None:
            raise FsmlogError(f"no machine with id {cid!r} in {_streams(rt.log)}; `fsmlog status` lists them")
        tail = tail[-TAIL_RECORDS:]
        if args.json:
            out.print_json(status_document(state, snap, tail))
            return 0
        con = out.console()
        con.print(out.machines_table([state], f"machine {cid}", wide=args.wide))
        wait = waiting_line(state)
        if wait:
            con.print(wait, style="yellow", markup=False)
        context = json.dumps(state.context, default=str, indent=None if args.wide else 2)
        con.print(f"context: {context}", soft_wrap=args.wide, markup=False)  # wrapped to the terminal
        if snap is not None:
            con.print(f"snapshot: position {snap.position}, {snap.state.status} @ {snap.state.state} "
                      f"(steps {snap.state.steps})", style="dim")
        else:
            con.print("snapshot: none yet", style="dim")
        if tail:
            rows = [(r.position, decode(r.data), None) for r in tail]
            con.print(out.records_table(rows, "log after the snapshot", wide=args.wide))
    return 0


def waiting_line(state: MachineState, now: float | None = None) -> str | None:
    """``waiting until <time>`` for a machine on a timer; what it waits for in a wait state (its children
    or an event, with the command that helps); else None."""
    if state.terminal:
        return None
    children = WaitWords().children(state)  # an idle children wait: sending it an event would be refused
    if children:
        return f"{children} in state {state.state!r} (`fsmlog history ID` lists them)"
    if state.waiting_for_event:
        return f"waiting for an event in state {state.state!r} (`fsmlog send ID EVENT`)"
    due = state.waiting_until
    if due is None:
        return None
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(due))
    verb = "waiting until" if due > (time.time() if now is None else now) else "due since"
    return f"{verb} {when}, then {state.event!r} from state {state.state!r}"


def status_document(state: MachineState, snap: Snapshot | None, tail: list[LogRecord]) -> dict[str, Any]:
    """What ``status ID --json`` prints (and the console's ``/api/machines/{id}`` returns)."""
    return {
        "machine": state.as_dict(),
        "context": state.context,
        "snapshot": None if snap is None else {"position": snap.position, "version": snap.version,
                                               "state": snap.state.as_dict()},
        "tail": [{"position": r.position, **out.event_dict(decode(r.data), with_context=False)} for r in tail],
    }


def history_rows(rt: Runtime, cid: str) -> list[tuple[str, Event, MachineState]]:
    """(position, record, folded state after it) for every record of ``cid``, oldest first."""
    from eventlog.sides import read_machine
    from projections.fold import fold

    records = _by_time(read_machine(readable_log(rt, "fsmlog history"), cid))
    if not records:
        raise FsmlogError(f"no records of machine {cid!r} in the log; `fsmlog status` lists machines")
    rows: list[tuple[str, Event, MachineState]] = []
    folded: MachineState | None = None
    for r in records:
        try:
            ev = decode(r.data)
        except DecodeError as exc:
            raise FsmlogError(f"record at position {r.position} of {cid!r} cannot be decoded: {exc}") from None
        folded = cast("MachineState", fold(folded, [ev]))  # a fold of one record or more is a state
        rows.append((r.position, ev, folded))
    return rows


def history_document(rows: list[tuple[str, Event, MachineState]]) -> list[dict[str, Any]]:
    """What ``history ID --json`` prints (and the console's ``/api/machines/{id}/history`` returns)."""
    return [{"position": p, "record": out.event_dict(ev), "folded": f.as_dict()} for p, ev, f in rows]


def cmd_history(args: argparse.Namespace) -> int:
    with open_runtime(args) as rt:
        cid = resolve_machine(rt, args.id)
        rows = history_rows(rt, cid)
    if args.json:
        out.print_json(history_document(rows))
        return 0
    con = out.console()
    con.print(out.records_table(rows, f"history of {cid} ({len(rows)} records)", wide=args.wide))
    for line in family_lines(rows[-1][2].last):
        con.print(line, markup=False)
    return 0


def family_lines(last: Event) -> list[str]:
    """The machine's parent and children, as its records link them (``wait: children``)."""
    lines = [f"parent: {last.parent}"] if last.parent else []
    kids = last.context.get("children")
    if isinstance(kids, list) and kids:
        shown = [k if isinstance(k, str) else f"{k.get('id')} ({k.get('status')})" for k in kids
                 if isinstance(k, (str, dict))]
        lines.append(f"children ({len(shown)}): " + ", ".join(shown))
    return lines


def _by_time(records: list[LogRecord]) -> list[LogRecord]:
    """Records of both streams in the order they were written (their record time; steps break ties)."""
    def key(r: LogRecord) -> tuple[float, int]:
        try:
            ev = decode(r.data)
        except DecodeError:
            return (float("inf"), 0)
        return (ev.time, ev.steps)

    return sorted(records, key=key)


def cmd_abort(args: argparse.Namespace) -> int:
    with open_runtime(args) as rt:
        cid = resolve_machine(rt, args.id)
        ev = rt.engine.abort(cid, args.reason)
    out.console().print(f"aborted {cid} ({ev.machine}) in state {ev.state!r} at step {ev.steps}")
    return 0


# ---------------------------------------------------------------- validate / graph


def cmd_validate(args: argparse.Namespace) -> int:
    from projections.errors import DefinitionError

    try:
        definitions = load_definitions(args.fsm)
    except DefinitionError as exc:
        for problem in exc.problems:
            out.err_console().print(f"error: {problem}", markup=False)
        return 1
    con = out.console()
    con.print(f"ok: {len(definitions)} machines", markup=False)
    for name in definitions:
        m = definitions.machine(name)
        con.print(f"  {name}  {m.hash}  {len(m.states)} states", markup=False)
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from fsmlog.graph import render

    definitions = load_definitions(args.fsm)
    current = None
    names = list(definitions)
    if args.id is not None:
        with open_runtime(args, definitions, fsm_path=args.fsm) as rt:
            state = rt.engine.status(resolve_machine(rt, args.id))
        if state is None:
            raise FsmlogError(f"no machine with id {args.id!r} in the log; `fsmlog status` lists machines")
        if args.machine and args.machine != state.machine:
            raise UsageError(f"machine {args.id} is a {state.machine!r}, not a {args.machine!r}")
        names, current = [state.machine], state.state
    elif args.machine is not None:
        definitions.machine(args.machine)
        names = [args.machine]
    texts = [render(definitions.machine(n), args.format, current) for n in names]
    print("\n".join(texts), end="")
    return 0
