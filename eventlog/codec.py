"""The versioned msgpack wire format of an ``Event``.

Layout (version 1), one msgpack array:
``[1, kind, correlation_id, machine, definition_hash, steps, retries, state,
event|nil, time, error_type|nil, error_message|nil, upgraded_from|nil,
context(bin)]``. Version 2 (written only when a record waits or carries an event
sent from outside, so earlier logs and hashes stay byte-identical) appends one
field, ``[due|nil, event_id|nil, [seen event ids]]`` plus ``parent`` when the
record is a child machine's. ``kind`` is a small
integer (index into ``KINDS``). The
user context is nested as its own msgpack document inside a bin field, so the
fold and the router decode a record without touching the context.

Decoding is strict: anything that is not exactly this shape raises
``DecodeError`` and nothing in the bytes is interpreted further.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgpack

from .errors import DecodeError, RecordTooLarge
from .event import KINDS, Event

VERSION = 1
VERSION_WAITS = 2  # the version with the waiting / external-event field
VERSIONS = (VERSION, VERSION_WAITS)
MAX_SEEN = 32  # the most event ids a record remembers (see ``Event.seen``)
MAX_RECORD_BYTES = 1024 * 1024  # Kinesis: data + partition key must fit in 1 MiB
_FIELDS = 14
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}
_KIND_COUNT = len(KINDS)

_packb = msgpack.packb
_unpackb = msgpack.unpackb


def encode(event: Event, limit: int = MAX_RECORD_BYTES) -> bytes:
    waits = event.due is not None or event.event_id is not None or bool(event.seen) or event.parent is not None
    fields = [
        VERSION_WAITS if waits else VERSION,
        _KIND_CODE[event.kind],
        event.correlation_id,
        event.machine,
        event.definition_hash,
        event.steps,
        event.retries,
        event.state,
        event.event,
        event.time,
        event.error_type,
        event.error_message,
        event.upgraded_from,
        event.context_raw,
    ]
    if waits:
        extra = [event.due, event.event_id, list(event.seen[-MAX_SEEN:])]
        fields.append(extra if event.parent is None else [*extra, event.parent])
    data = _packb(fields, use_bin_type=True)
    size = len(data) + len(event.correlation_id.encode())
    if size > limit:
        raise RecordTooLarge(
            f"record for machine {event.machine!r} ({event.correlation_id}) at step {event.steps} "
            f"is {size} bytes, over the {limit}-byte limit: keep large data out of the user context "
            f"(store it elsewhere and keep a key)"
        )
    return data


def _bad(what: str, data: bytes) -> DecodeError:
    head = data[:32].hex()
    return DecodeError(f"not an fsmlog record ({what}); first bytes: {head} ({len(data)} bytes)")


def decode(data: bytes) -> Event:
    """Decode one record. Raises ``DecodeError`` for anything malformed."""
    return Event(*decode_fields(data))


def decode_fields(data: bytes) -> tuple:
    """Validate one record and return ``Event``'s fields in order, without building the object.

    The fold runs on these tuples so that a batch of a million records pays
    for one ``Event`` per machine, not one per record.
    """
    if type(data) is not bytes:
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        else:
            raise DecodeError(f"record data must be bytes, not {type(data).__name__}")
    try:
        f = _unpackb(data, raw=False, use_list=True, max_array_len=64, max_map_len=0, max_ext_len=0)
    except Exception as exc:
        raise _bad(f"msgpack: {exc}", data) from None
    if type(f) is not list or not f:
        raise _bad("expected a 14-field array", data)
    if type(f[0]) is not int or f[0] not in VERSIONS:
        raise _bad(f"unknown record version {f[0]!r}; this fsmlog reads versions 1 and 2", data)
    if len(f) != _FIELDS + (f[0] == VERSION_WAITS):
        raise _bad(f"expected a {_FIELDS + (f[0] == VERSION_WAITS)}-field array", data)
    due, event_id, seen, parent = _waits(f.pop(), data) if f[0] == VERSION_WAITS else (None, None, (), None)
    (_, kind, cid, machine, dhash, steps, retries, state, ev, time, etype, emsg, upg, ctx) = f
    if type(kind) is not int or not 0 <= kind < _KIND_COUNT:
        raise _bad(f"unknown kind code {kind!r}", data)
    if type(cid) is not str or not cid:
        raise _bad("correlation_id must be a non-empty string", data)
    if type(machine) is not str or not machine:
        raise _bad("machine must be a non-empty string", data)
    if type(dhash) is not str:
        raise _bad("definition_hash must be a string", data)
    if type(steps) is not int or steps < 0 or type(retries) is not int or retries < 0:
        raise _bad("steps and retries must be non-negative integers", data)
    if type(state) is not str:
        raise _bad("state must be a string", data)
    if ev is not None and type(ev) is not str:
        raise _bad("event must be a string or nil", data)
    if type(time) is not float:
        if type(time) is int:
            time = float(time)
        else:
            raise _bad("time must be a number", data)
    if (etype is not None and type(etype) is not str) or (emsg is not None and type(emsg) is not str):
        raise _bad("error fields must be strings or nil", data)
    if upg is not None and type(upg) is not str:
        raise _bad("upgraded_from must be a string or nil", data)
    if type(ctx) is not bytes:
        raise _bad("context must be a msgpack bin", data)
    return (KINDS[kind], cid, machine, dhash, steps, retries, state, ev, time, ctx, etype, emsg, upg,
            due, event_id, seen, parent)


def _waits(extra: object, data: bytes) -> tuple[float | None, str | None, tuple[str, ...], str | None]:
    """Version 2's last field: ``[due|nil, event_id|nil, [event ids](, parent)]``, checked strictly."""
    if type(extra) is not list or len(extra) not in (3, 4):
        raise _bad("the wait field must be a 3- or 4-item array", data)
    due, event_id, seen = extra[:3]
    parent = extra[3] if len(extra) == 4 else None
    if len(extra) == 4 and (type(parent) is not str or not parent):
        raise _bad("parent must be a non-empty string", data)
    if due is not None and type(due) is not float:
        if type(due) is int:
            due = float(due)
        else:
            raise _bad("due must be a number or nil", data)
    if event_id is not None and type(event_id) is not str:
        raise _bad("event_id must be a string or nil", data)
    if type(seen) is not list or len(seen) > MAX_SEEN or any(type(x) is not str for x in seen):
        raise _bad(f"seen must be a list of at most {MAX_SEEN} strings", data)
    return due, event_id, tuple(seen), parent


def decode_many(records: Iterable[bytes]) -> list[Event]:
    return [decode(r) for r in records]
