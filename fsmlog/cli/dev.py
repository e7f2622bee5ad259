"""``fsmlog dev FSM.yaml``: run the Lambda handler locally against the configured sources.

With AWS sources configured but no endpoint for them, a moto server is started
in this process and the resources are created on it, so ``fsmlog dev`` works
with the same settings file a deployment uses. ``--start MACHINE --count N``
starts machines; ``--until-done`` exits once they all ended (status 1 if any
failed or was aborted, or if ``--timeout`` ran out first).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict
from typing import Any

from eventlog.event import TERMINAL

from . import UsageError, load_definitions, settings_for
from . import output as out
from .machines import parse_context


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dev", help="run the Lambda handler locally: poll the configured sources, "
                                   "start a local AWS emulator when no endpoint is set")
    p.add_argument("fsm", metavar="FSM.yaml")
    p.add_argument("--start", metavar="MACHINE", help="start machines of this name first")
    p.add_argument("--count", type=int, default=1, help="how many machines --start starts (default 1)")
    p.add_argument("--context", default=None, help="initial user context of started machines, a JSON object")
    p.add_argument("--until-done", action="store_true",
                   help="exit when every started machine ended (non-zero if any failed)")
    p.add_argument("--timeout", type=float, default=300.0, help="with --until-done: give up after this many "
                                                                 "seconds (default 300)")
    p.add_argument("--batch", type=int, default=100, help="records per invocation (default 100)")
    p.add_argument("--timer", type=float, default=2.0, help="seconds between scheduled-timer runs (default 2)")
    p.add_argument("--quiet", action="store_true", help="no line per step")
    p.add_argument("--json", action="store_true", help="print one JSON document with the started machines' ends")
    p.set_defaults(func=cmd_dev)


def cmd_dev(args: argparse.Namespace) -> int:
    from handlers.devloop import DevLoop, local_endpoints
    from handlers.triggers import runtime

    if args.until_done and not args.start:
        raise UsageError("--until-done needs --start MACHINE (the machines to wait for)")
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    definitions = load_definitions(args.fsm)
    if args.start and args.start not in definitions:
        definitions.machine(args.start)  # raises UnknownMachine naming the known ones
    context = parse_context(args.context)
    settings, server = local_endpoints(settings_for(args, args.fsm))
    ended: dict[str, Any] = {}
    watched: set[str] = set()
    quiet = args.quiet or args.json

    def on_step(record: Any, nxt: Any, outcome: str) -> None:
        if not quiet:
            out.console().print(out.transition_line(record, nxt, outcome))
        if nxt is not None and nxt.kind in TERMINAL and nxt.correlation_id in watched:
            ended[nxt.correlation_id] = nxt

    try:
        if server is not None:
            from fsmlog.resources import create_resources

            for line in create_resources(settings):
                out.err_console().print(f"local AWS: {line}", style="dim")
        engine = runtime.build_engine(settings, definitions, on_step=on_step)
        if not args.debug:  # the transition lines say it; the JSON step lines are for CloudWatch
            logging.getLogger("fsmlog.step").setLevel(logging.WARNING)
        try:
            loop = DevLoop(engine, batch_size=args.batch, timer_every_s=args.timer)
            ids: list[str] = []
            if args.start:
                ids = engine.start_many(args.start, [context] * args.count)
                watched.update(ids)
                if not quiet:
                    out.err_console().print(f"started {len(ids)} {args.start} machine(s)", style="dim")
            if not args.until_done:
                out.err_console().print("polling; Ctrl-C to stop", style="dim")
                loop.run()
                return 0
            last_check = [time.monotonic()]

            def done() -> bool:
                if len(ended) == len(ids):
                    return True
                if time.monotonic() - last_check[0] > 5.0:  # machines ended elsewhere (aborted, another worker)
                    last_check[0] = time.monotonic()
                    for cid in set(ids) - set(ended):
                        state = engine.status(cid)
                        if state is not None and state.terminal:
                            ended[cid] = state.last
                return len(ended) == len(ids)

            finished = loop.run(until=done, timeout_s=args.timeout)
            return _report(args, ids, ended, finished, loop.stats)
        finally:
            runtime.reset(close=False)
            engine.services.close()
    finally:
        if server is not None:
            server.stop()


def _report(args: argparse.Namespace, ids: list[str], ended: dict[str, Any], finished: bool, stats: Any) -> int:
    kinds = {cid: (ended[cid].kind if cid in ended else "running") for cid in ids}
    failed = [cid for cid, k in kinds.items() if k not in ("completed", "running")]
    if args.json:
        out.print_json({
            "finished": finished,
            "machines": [
                {"correlation_id": cid, "status": kinds[cid],
                 **({"state": ended[cid].state, "error_type": ended[cid].error_type,
                     "error_message": ended[cid].error_message} if cid in ended else {})}
                for cid in ids
            ],
            "stats": asdict(stats),
        })
    else:
        counts: dict[str, int] = {}
        for k in kinds.values():
            counts[k] = counts.get(k, 0) + 1
        out.console().print(out.counts_text(counts))
        for cid in failed:
            ev = ended[cid]
            out.err_console().print(f"{cid} {ev.kind} in state {ev.state!r}: {ev.error_type}: {ev.error_message}",
                                    style="red")
    if not finished:
        from eventlog.errors import FsmlogError

        waiting = sorted(cid for cid, k in kinds.items() if k == "running")
        raise FsmlogError(
            f"{len(waiting)} machine(s) still running after {args.timeout:g}s: {', '.join(waiting[:5])}"
            f"{' ...' if len(waiting) > 5 else ''}; raise --timeout or check `fsmlog dead-letters list`"
        )
    return 1 if failed else 0
