"""``fsmlog dead-letters``: look at parked records and put them back on the stream.

``list`` shows the newest first; ``show ID`` prints one letter with its raw bytes
as a hex dump and an attempt to decode them; ``redrive ID`` (or ``--all``)
appends the raw bytes to the configured stream and removes the letter once the
append succeeded. Bytes that are not an fsmlog record are not redriven: they
would only be parked again.
"""

from __future__ import annotations

import argparse
from typing import Any

from eventlog.codec import decode
from eventlog.errors import DecodeError, FsmlogError
from eventlog.log import OutRecord
from handlers.triggers import unbase64

from . import UsageError, open_runtime
from . import output as out
from .ids import resolve_letter, short_ids
from .tables import Col, FittedTable

HEX_LIMIT = 1024  # bytes shown by `show` unless --full
LIST_LIMIT = 100


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dead-letters", help="list, show and redrive parked (poison) records")
    cmds = p.add_subparsers(dest="dead_letters_command", metavar="ACTION")

    c = cmds.add_parser("list", help="parked records, newest first")
    c.add_argument("--json", action="store_true")
    c.add_argument("--limit", type=int, default=LIST_LIMIT, help=f"at most this many (default {LIST_LIMIT})")
    c.add_argument("--wide", action="store_true", help="full ids and every column, however wide the terminal")
    c.set_defaults(func=cmd_list)

    c = cmds.add_parser("show", help="one parked record: reason, source, position, time, bytes")
    c.add_argument("id", help="dead letter id, or any unique prefix of one")
    c.add_argument("--full", action="store_true", help=f"dump every byte (default: the first {HEX_LIMIT})")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_show)

    c = cmds.add_parser("redrive", help="append a parked record's bytes to the stream again and remove it")
    c.add_argument("id", nargs="?", help="dead letter id, or any unique prefix of one")
    c.add_argument("--all", action="store_true", help="every parked record that is an fsmlog record")
    c.set_defaults(func=cmd_redrive)

    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    raise UsageError("dead-letters needs an action: list, show ID or redrive ID|--all "
                     "(`fsmlog dead-letters -h` describes them)")


def hexdump(data: bytes, limit: int | None = HEX_LIMIT) -> str:
    """``offset  hex bytes  |ascii|`` lines, 16 bytes each."""
    shown = data if limit is None else data[:limit]
    lines = []
    for off in range(0, len(shown), 16):
        chunk = shown[off:off + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{off:08x}  {hexes:<47}  |{text}|")
    if len(shown) < len(data):
        lines.append(f"... {len(data) - len(shown)} more bytes (--full shows them)")
    return "\n".join(lines) if lines else "(no bytes)"


def decode_attempt(data: bytes) -> dict[str, Any]:
    """What the bytes are: an fsmlog record (its fields), base64 of one, or why not."""
    try:
        ev = decode(data)
    except DecodeError as exc:
        why = str(exc)
    else:
        return {"record": out.event_dict(ev, with_context=False), **_context_of(ev)}
    try:
        inner = decode(unbase64(data.decode("ascii"), "dead letter"))
    except (ValueError, DecodeError):
        return {"error": why}
    return {"error": why, "base64_of_record": out.event_dict(inner, with_context=False)}


def _context_of(ev: Any) -> dict[str, Any]:
    try:
        return {"context": ev.context}
    except FsmlogError as exc:
        return {"context_error": str(exc)}


def letter_dict(letter: Any) -> dict[str, Any]:
    return {"id": letter.id, "reason": letter.reason, "source": letter.source, "position": letter.position,
            "time": letter.time, "size": len(letter.data)}


LETTER_COLUMNS = (Col("id"), Col("time", 60), Col("source", 40, wrap=True), Col("position", 50),
                  Col("bytes", 45, justify="right"), Col("reason", 90, wrap=True))


def cmd_list(args: argparse.Namespace) -> int:
    with open_runtime(args) as rt:
        letters = rt.services.dead_letters.list(args.limit)
    if args.json:
        out.print_json([letter_dict(x) for x in letters])
        return 0
    if not letters:
        out.console().print("no dead letters")
        return 0
    ids = short_ids(x.id for x in letters)
    rows = [(x.id if args.wide else ids[x.id], out.clock_time(x.time), x.source, x.position, str(len(x.data)),
             x.reason) for x in letters]
    title = f"dead letters ({len(letters)}{'+' if len(letters) >= args.limit else ''})"
    out.console().print(FittedTable(LETTER_COLUMNS, rows, title, wide=args.wide))
    return 0


def get_letter(rt: Any, letter_id: str) -> Any:
    """The dead letter ``letter_id`` (or a unique prefix of its id) names."""
    store = rt.services.dead_letters
    letter_id = resolve_letter(store, letter_id)
    letter = store.get(letter_id)
    if letter is None:
        raise FsmlogError(f"no dead letter {letter_id!r} in {rt.services.dead_letters.name}; "
                          "`fsmlog dead-letters list` shows the ids")
    return letter


def cmd_show(args: argparse.Namespace) -> int:
    import time

    with open_runtime(args) as rt:
        letter = get_letter(rt, args.id)
    attempt = decode_attempt(letter.data)
    if args.json:
        out.print_json({**letter_dict(letter), "data_hex": letter.data.hex(), "decoded": attempt})
        return 0
    c = out.console()
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter.time))
    for label, value in (("id", letter.id), ("reason", letter.reason), ("source", letter.source),
                         ("position", letter.position), ("time", when), ("size", f"{len(letter.data)} bytes")):
        c.print(f"[bold]{label:>9}[/bold]  {value}", markup=True, highlight=False)
    c.print("\n[bold]bytes[/bold]", markup=True)
    c.print(hexdump(letter.data, None if args.full else HEX_LIMIT), markup=False)
    c.print("\n[bold]decoded[/bold]", markup=True)
    if "record" in attempt:
        for k, v in attempt["record"].items():
            c.print(f"  {k}: {v!r}", markup=False)
        c.print(f"  context: {attempt.get('context', attempt.get('context_error'))!r}", markup=False)
    else:
        c.print(f"  cannot be decoded: {attempt['error']}", markup=False)
        if "base64_of_record" in attempt:
            c.print(f"  but it is the base64 of one: {attempt['base64_of_record']!r}", markup=False)
    return 0


def redrive(rt: Any, letter: Any, *, flush: bool = True) -> str:
    """Append a parked record's bytes to the stream again, then remove the letter; its machine's id.

    Raises ``DecodeError`` (nothing written) for bytes that are not an fsmlog record: they would only
    be parked again."""
    record = decode(letter.data)
    rt.log.append([OutRecord(record.correlation_id, letter.data)])
    rt.services.dead_letters.remove(letter.id)
    rt.engine.metrics.count("DeadLettersRedriven", 1, {"machine": record.machine})
    if flush:  # (``--all`` flushes once at the end) a failed sink only warns: the record is back anyway
        rt.engine.flush_metrics()
    return record.correlation_id


def cmd_redrive(args: argparse.Namespace) -> int:
    if bool(args.id) == bool(args.all):
        raise UsageError("redrive takes a dead letter ID or --all (not both)")
    with open_runtime(args) as rt:
        store = rt.services.dead_letters
        letters = store.list(1_000_000) if args.all else [get_letter(rt, args.id)]
        redriven, skipped = 0, []
        for letter in letters:
            try:
                redrive(rt, letter, flush=False)
            except DecodeError as exc:
                if not args.all:
                    raise FsmlogError(
                        f"dead letter {letter.id} holds bytes that are not an fsmlog record ({exc}); redriving "
                        "would only park them again"
                    ) from None
                skipped.append(letter.id)
                continue
            redriven += 1
            out.console().print(f"redriven {letter.id} -> {rt.log.name}")
        rt.engine.flush_metrics()
    if skipped:
        out.err_console().print(f"skipped {len(skipped)} letter(s) whose bytes are not fsmlog records: "
                                f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}")
    out.console().print(f"{redriven} record(s) redriven")
    return 0
