"""``fsmlog send ID EVENT``: deliver an event from outside to a machine waiting in a ``wait: true`` state."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from . import UsageError, open_runtime
from . import output as out
from .ids import resolve_machine


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("send", help="send an event to a machine waiting in a 'wait: true' state")
    p.add_argument("id", help="the machine's correlation id, or any unique prefix of one")
    p.add_argument("event", help="the event to fire from the machine's current state")
    p.add_argument("--data", default=None, help="JSON put in the context under 'event_data'")
    p.add_argument("--event-id", default=None,
                   help="the sender's id: the same id sent again is applied once (default: a new one)")
    p.add_argument("--fsm", metavar="FSM.yaml", default=None,
                   help="machine definitions (default: FSMLOG_DEFINITIONS, else ./fsm.yaml)")
    p.add_argument("--json", action="store_true",
                   help="print what became of it as one JSON document (duplicate: the id was sent before)")
    p.set_defaults(func=cmd_send)


def _data(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--data is not valid JSON ({exc.msg} at character {exc.pos}): {text!r}; give a JSON "
                         "value like '{\"by\": \"ana\"}'") from None


def cmd_send(args: argparse.Namespace) -> int:
    from handlers.triggers.runtime import definitions_path
    from projections.definition import load

    data = _data(args.data)
    path = args.fsm or os.fspath(definitions_path())
    definitions = load(path, check_actions=False)  # nothing runs here: the worker imports the actions
    with open_runtime(args, definitions, fsm_path=path) as rt:
        cid = resolve_machine(rt, args.id)
        sent = rt.engine.send_event(cid, args.event, data, args.event_id)
    if args.json:  # a script branches on ``duplicate``, not on the sentence below
        out.print_json({"correlation_id": cid, "event": args.event, "event_id": sent.event_id,
                        "state": sent.state, "duplicate": sent.duplicate})
        return 0
    con = out.console()
    if sent.duplicate:
        con.print(f"event id {sent.event_id} was applied already to {cid}; nothing sent", markup=False)
    else:
        con.print(f"sent {args.event!r} to {cid} in state {sent.state!r} (event id {sent.event_id})",
                  markup=False)
    return 0
