"""User-context values: what may travel in the log, and their exact msgpack form.

msgpack's own types travel as they are; datetime, Decimal and UUID ride in
extension types so they come back equal and of the same type. Anything else is
refused with the key path that holds it, so the step that put it there fails
with a message the user can act on.
"""

from __future__ import annotations

import datetime as _dt
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import msgpack

from .errors import ContextValueError, DecodeError

EXT_DATETIME = 1
EXT_DECIMAL = 2
EXT_UUID = 3

ALLOWED = "None, bool, int, float, str, bytes, list, dict, datetime, Decimal, UUID"


def _zone_key(tz: Any) -> str | None:
    key = getattr(tz, "key", None)  # zoneinfo.ZoneInfo keeps its IANA name
    return key if isinstance(key, str) else None


def _default(obj: Any) -> Any:
    t = type(obj)
    if t is _dt.datetime:
        return msgpack.ExtType(
            EXT_DATETIME, msgpack.packb([obj.isoformat(), _zone_key(obj.tzinfo)], use_bin_type=True)
        )
    if t is Decimal:
        return msgpack.ExtType(EXT_DECIMAL, str(obj).encode())
    if t is uuid.UUID:
        return msgpack.ExtType(EXT_UUID, obj.bytes)
    if isinstance(obj, Mapping) and t is not dict:
        return dict(obj)
    if isinstance(obj, list) and t is not list:
        return list(obj)
    raise TypeError(t.__name__)


# What datetime.isoformat() writes. datetime.fromisoformat (3.10-3.13) drops the
# microseconds of a UTC offset ("+00:00:00.500000" comes back as UTC), so the
# values are read back here, field by field, exactly.
_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{6}))?"
    r"(?:([+-])(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{6}))?)?)?",
    re.ASCII,
)


def _from_iso(iso: str) -> _dt.datetime:
    """A ``datetime.isoformat()`` string back to the same datetime, offset and all."""
    m = _ISO.fullmatch(iso)
    if m is None:
        raise ValueError(f"{iso!r} is not what datetime.isoformat() writes")
    y, mo, d, h, mi, s, us, sign, oh, om, osec, ous = m.groups()
    tz = None
    if sign:
        offset = _dt.timedelta(hours=int(oh), minutes=int(om), seconds=int(osec or 0), microseconds=int(ous or 0))
        tz = _dt.timezone(-offset if sign == "-" else offset)
    return _dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), int(us or 0), tzinfo=tz)


def _ext_hook(code: int, data: bytes) -> Any:
    try:
        if code == EXT_DATETIME:
            iso, zone = msgpack.unpackb(data, raw=False)
            value = _from_iso(iso)
            if zone is not None:
                from zoneinfo import ZoneInfo

                # Same wall time and offset as written (astimezone would move times in a DST gap and
                # overflow near datetime.min/max); the instant wins only if the zone's rules changed.
                tz = ZoneInfo(zone)
                offset = value.utcoffset()
                local = value.replace(tzinfo=tz)
                if local.utcoffset() != offset:
                    local = local.replace(fold=1)
                value = local if local.utcoffset() == offset else value.astimezone(tz)
            return value
        if code == EXT_DECIMAL:
            return Decimal(data.decode())
        if code == EXT_UUID:
            return uuid.UUID(bytes=data)
    except Exception as exc:  # malformed payload inside a known extension
        raise DecodeError(f"context extension type {code} holds a malformed value: {exc}") from None
    raise DecodeError(f"context holds unknown msgpack extension type {code}")


def _find_bad(value: Any, path: str) -> tuple[str, str] | None:
    """Walk the context to name the first value that cannot be encoded."""
    t = type(value)
    if value is None or t in (bool, int, float, str, bytes, _dt.datetime, Decimal, uuid.UUID):
        if t is int and not (-(2**63) <= value < 2**64):
            return path, "int out of the 64-bit range"
        return None
    if isinstance(value, Mapping):
        for k, v in value.items():
            if type(k) not in (str, int):
                return f"{path}[{k!r}]", f"dict key of type {type(k).__name__} (keys must be str or int)"
            found = _find_bad(v, f"{path}.{k}" if type(k) is str else f"{path}[{k}]")
            if found:
                return found
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _find_bad(v, f"{path}[{i}]")
            if found:
                return found
        return None
    if t is tuple:
        return path, "tuple (use a list: tuples would come back as lists)"
    return path, t.__name__


def encode_context(context: Mapping[str, Any], where: str = "") -> bytes:
    """Encode a user context; refuse, naming the key, any value that would not round-trip."""
    if not isinstance(context, Mapping):
        raise ContextValueError(f"user context{where} must be a dict, not {type(context).__name__}")
    try:
        return msgpack.packb(context, default=_default, use_bin_type=True, strict_types=True, datetime=False)
    except (TypeError, ValueError, OverflowError) as exc:
        try:
            found = _find_bad(context, "context")
        except RecursionError:  # a cycle or nesting too deep for msgpack: no single key to blame
            found = None
        path, what = found if found else ("context", str(exc))
        raise ContextValueError(
            f"user context{where}: value at {path} is a {what}; allowed types are {ALLOWED}"
        ) from None


def decode_context(raw: bytes) -> dict[str, Any]:
    try:
        value = msgpack.unpackb(raw, raw=False, ext_hook=_ext_hook, strict_map_key=False)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"user context is not valid msgpack: {exc}") from None
    if type(value) is not dict:
        raise DecodeError(f"user context must decode to a map, got {type(value).__name__}")
    return value


EMPTY_CONTEXT = encode_context({})
