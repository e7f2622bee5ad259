"""``fsmlog test FSM.yaml``: the built-in properties (P1-P6) of each machine, over generated cases.

Each machine runs in process, with the real engine, on embedded files of its
own, under generated contexts (from ``--context-schema``, else ``{}``) and
fault schedules (crashes before a commit, duplicate deliveries, actions that
raise after running, aborts, several machines interleaved). Exit 0 when every
property holds, 1 when one fails (each failure: the property, the machine,
state and event, the shrunk case, and a log to look at with ``fsmlog history
--db PATH ID``), 2 when the machines or the schema cannot be loaded.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

from eventlog.errors import FsmlogError

from . import one_line
from . import output as out

WIDTH = 80
KEEP_DIR = ".fsmlog/test"  # where the logs of failing cases are written, under the working directory
PROPERTIES_HELP = """properties (each case is run without faults and with them):
  P1  every event an action returns has a transition from its state
  P2  with no faults, the machine ends within --max-steps
  P3  a step re-run after a crash returns the same event and context
  P4  the context stays encodable
  P5  faults do not change the outcome (status, state, context)
  P6  the fold of the log equals the engine's view

exit status: 0 all hold, 1 a property failed, 2 machines or schema unusable"""
EXIT_FAILED = 1
EXIT_UNUSABLE = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("test", help="check the built-in properties (P1-P6) of machines over generated runs",
                       description="Run each machine with the real engine under generated contexts and faults "
                                   "(crashes before a commit, duplicate deliveries, actions that raise after "
                                   "running, aborts, interleaved machines) and check P1-P6.",
                       epilog=PROPERTIES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fsm", metavar="FSM.yaml")
    p.add_argument("--machine", default=None, help="only this machine (default: every machine)")
    p.add_argument("--context-schema", default=None, metavar="SCHEMA.json",
                   help="JSON Schema of the initial context (default: every machine starts with {})")
    p.add_argument("--examples", type=int, default=50, help="generated cases per machine (default 50)")
    p.add_argument("--seed", type=int, default=None, help="seed of the generator (default: a random one, shown)")
    p.add_argument("--max-steps", type=int, default=1000,
                   help="a fault-free machine must end within this many steps (default 1000)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_test)


def _unusable(exc: BaseException) -> int:
    print(f"error: {one_line(exc)}", file=sys.stderr)
    return EXIT_UNUSABLE


def cmd_test(args: argparse.Namespace) -> int:
    import random

    from fsmlog.testing.adversary import contexts_from_schema
    from fsmlog.testing.errors import TestingError
    from fsmlog.testing.runner import Kit

    for option, value in (("--examples", args.examples), ("--max-steps", args.max_steps)):
        if value < 1:
            return _unusable(TestingError(f"{option} {value} is below 1; give 1 or more", setting=option))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    try:
        contexts = contexts_from_schema(args.context_schema) if args.context_schema else None
        kit = Kit(args.fsm, max_steps=args.max_steps)
    except FsmlogError as exc:
        return _unusable(exc)
    with kit:
        try:
            names = [kit.machine(args.machine).name] if args.machine else kit.machines
        except FsmlogError as exc:
            return _unusable(exc)
        reports = _search(kit, names, contexts, args, seed)
    if args.json:
        out.print_json({"fsm": args.fsm, "seed": seed, "examples": args.examples, "max_steps": args.max_steps,
                        "context_schema": args.context_schema, "ok": all(r.ok for r in reports),
                        "machines": [r.as_dict() for r in reports]})
    else:
        _print(reports, args, seed)
    return 0 if all(r.ok for r in reports) else EXIT_FAILED


def _search(kit: Any, names: list[str], contexts: Any, args: argparse.Namespace, seed: int) -> list[Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from fsmlog.testing.properties import Report, search

    keep = Path(KEEP_DIR).absolute()
    quiet = logging.getLogger("fsmlog")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # injected faults make the engine warn; they are the point here
    reports = []
    columns = (TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
               TextColumn("cases"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=out.err_console(), transient=True) as progress:
            for name in names:
                task = progress.add_task(f"testing {name}", total=args.examples)

                def advance(r: Report, t: TaskID = task) -> None:
                    progress.update(t, completed=min(r.examples, args.examples))

                report = search(kit, name, contexts=contexts, examples=args.examples, seed=seed, keep=keep,
                                progress=advance)
                progress.remove_task(task)
                reports.append(report)
    finally:
        quiet.setLevel(level)
    return reports


def _print(reports: list[Any], args: argparse.Namespace, seed: int) -> None:
    lines = [f"fsmlog test {args.fsm}: {args.examples} cases per machine, seed {seed}, "
             f"max {args.max_steps} steps",
             f"contexts from {args.context_schema}" if args.context_schema else
             "contexts: {} (give --context-schema to generate them)"]
    for r in reports:
        lines += r.lines(WIDTH)
    if all(r.ok for r in reports):
        lines.append("every property held (P1-P6); `fsmlog test --help` says what each checks")
    for line in lines:
        print(textwrap.fill(line, WIDTH, subsequent_indent="  ") if len(line) > WIDTH else line)
