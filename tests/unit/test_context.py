"""User-context values: what travels comes back exactly; what cannot travel is refused by key path."""

from __future__ import annotations

import collections
import datetime as dt
import enum
import uuid
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog.context import EXT_DATETIME, EXT_DECIMAL, EXT_UUID, decode_context, encode_context
from eventlog.errors import ContextValueError, DecodeError
from eventlog.event import STEP, Event
from tests.strategies import INT64, assert_same_value, context_values, contexts, fixed_offsets


def roundtrip(ctx: dict[str, Any]) -> dict[str, Any]:
    return decode_context(encode_context(ctx))


@given(contexts)
def test_every_allowed_value_comes_back_exactly(ctx):
    assert_same_value(ctx, roundtrip(ctx))


@given(contexts)
def test_event_create_keeps_the_context(ctx):
    e = Event.create(STEP, "c1", "order", "h", 3, 0, "received", "ok", 1.0, ctx)
    assert_same_value(ctx, e.context)
    assert e.context is not e.context  # a fresh copy each time: callers may mutate it


@given(contexts)
def test_encoding_is_deterministic(ctx):
    assert encode_context(ctx) == encode_context(ctx)
    assert encode_context(roundtrip(ctx)) == encode_context(ctx)


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 5, 1, 12, 30, 15, 123456),
        dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc),
        dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
        dt.datetime(2024, 5, 1, 12, 30, tzinfo=ZoneInfo("Europe/Paris")),
        dt.datetime(2021, 11, 7, 1, 30, fold=0, tzinfo=ZoneInfo("America/New_York")),  # ambiguous, first
        dt.datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),  # ambiguous, second
        dt.datetime(2021, 3, 14, 2, 30, tzinfo=ZoneInfo("America/New_York")),  # in the DST gap
        dt.datetime(1, 1, 1, tzinfo=ZoneInfo("Asia/Tokyo")),  # UTC of it is before datetime.min
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=ZoneInfo("America/New_York")),
        dt.datetime(1890, 1, 1, tzinfo=ZoneInfo("Europe/Amsterdam")),  # local mean time, offset with seconds
        Decimal("1.10"),
        Decimal("-0"),
        Decimal("1E+3"),
        Decimal("0.000000000000000000000000000000000001"),
        Decimal("123456789012345678901234567890.123456789"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        uuid.UUID(int=0),
        b"",
        b"\x00\xff raw",
        "",
        "\u00e9t\u00e9 \U0001f600",
        -(2**63),
        2**64 - 1,
        -0.0,
        float("inf"),
        float("-inf"),
        5e-324,
        True,
        None,
        [],
        {},
        {1: "int key", "1": "str key"},
    ],
    ids=repr,
)
def test_exact_round_trip_of_each_kind(value):
    ctx = {"v": value, "nested": [{"v": value}]}
    assert_same_value(ctx, roundtrip(ctx))


@given(st.datetimes(timezones=st.timezones()))
def test_zoneinfo_datetimes_keep_zone_wall_time_and_offset(value):
    back = roundtrip({"d": value})["d"]
    assert_same_value(value, back)
    assert back.tzinfo is ZoneInfo(value.tzinfo.key)


def test_mapping_list_and_buffer_types_travel_as_their_plain_form():
    """Accepted on purpose (msgpack packs them natively or via the default hook); they come back
    as dict, list and bytes, not as the type that was put in."""

    class Tags(list):
        pass

    ctx = {
        "counts": collections.Counter(a=2),
        "od": collections.OrderedDict(x=1),
        "tags": Tags([1, 2]),
        "buf": bytearray(b"ab"),
        "view": memoryview(b"cd"),
    }
    back = roundtrip(ctx)
    assert back == {"counts": {"a": 2}, "od": {"x": 1}, "tags": [1, 2], "buf": b"ab", "view": b"cd"}
    assert [type(v) for v in back.values()] == [dict, dict, list, bytes, bytes]


class Color(enum.IntEnum):
    RED = 1


class Opaque:
    pass


BAD_VALUES = [
    {1, 2},
    frozenset({1}),
    (1, 2),
    object(),
    Opaque(),
    Color.RED,
    complex(1, 2),
    Fraction(1, 3),
    dt.date(2024, 1, 1),
    dt.time(12, 0),
    dt.timedelta(seconds=1),
    2**64,
    -(2**63) - 1,
    len,
]


@pytest.mark.parametrize("bad", BAD_VALUES, ids=lambda v: type(v).__name__)
def test_values_of_other_types_are_refused_with_their_path(bad):
    with pytest.raises(ContextValueError) as err:
        encode_context({"order": {"lines": [1, {"extra": bad}]}})
    message = str(err.value)
    assert "context.order.lines[1].extra" in message
    assert "allowed types are" in message


def test_tuple_refusal_says_what_to_use_instead():
    with pytest.raises(ContextValueError, match=r"context\.pair is a tuple \(use a list"):
        encode_context({"pair": (1, 2)})


@pytest.mark.parametrize("key", [(1, 2), frozenset({1}), Opaque()], ids=lambda k: type(k).__name__)
def test_dict_keys_of_other_types_are_refused(key):
    with pytest.raises(ContextValueError, match=rf"dict key of type {type(key).__name__}"):
        encode_context({"outer": {key: 1}})


@pytest.mark.parametrize("not_a_dict", [[("a", 1)], "a=1", 3, None])
def test_context_must_be_a_mapping(not_a_dict):
    with pytest.raises(ContextValueError, match="must be a dict"):
        encode_context(not_a_dict)


def test_a_cyclic_context_is_refused_not_a_recursion_error():
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ContextValueError, match="recursion limit"):
        encode_context({"loop": cyclic})
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ContextValueError):
        encode_context({"deep": deep})


def _place(ctx: Any, route: list[int], bad: Any) -> tuple[Any, str]:
    """Put ``bad`` somewhere inside a copy of ``ctx`` following ``route``; return it and its path."""
    if not route:
        return bad, ""
    step, rest = route[0], route[1:]
    if type(ctx) is dict and ctx:
        key = list(ctx)[step % len(ctx)]
        inner, path = _place(ctx[key], rest, bad)
        return {**ctx, key: inner}, (f".{key}" if type(key) is str else f"[{key}]") + path
    if type(ctx) is list and ctx:
        i = step % len(ctx)
        inner, path = _place(ctx[i], rest, bad)
        return [*ctx[:i], inner, *ctx[i + 1:]], f"[{i}]" + path
    return bad, ""


@given(
    st.dictionaries(st.text(max_size=6), context_values, min_size=1, max_size=4),
    st.lists(st.integers(0, 10), min_size=1, max_size=6),
    st.sampled_from(BAD_VALUES),
)
def test_one_bad_value_anywhere_is_named_by_its_path(ctx, route, bad):
    placed, path = _place(ctx, route, bad)
    with pytest.raises(ContextValueError) as err:
        encode_context(placed)
    assert f"value at context{path} is a" in str(err.value)


def test_event_create_names_machine_correlation_id_step_and_state():
    with pytest.raises(ContextValueError) as err:
        Event.create(STEP, "cid-42", "order", "h", 7, 0, "charged", "ok", 1.0, {"s": {1}})
    message = str(err.value)
    for part in ("'order'", "cid-42", "step 7", "'charged'", "context.s", "set"):
        assert part in message


@given(INT64)
def test_64_bit_integers_travel(n):
    assert roundtrip({"n": n, str(n): [n]}) == {"n": n, str(n): [n]}


@given(st.integers(min_value=2**64) | st.integers(max_value=-(2**63) - 1))
def test_integers_beyond_64_bits_are_refused(n):
    with pytest.raises(ContextValueError, match=r"context\.big\[0\] is a int out of the 64-bit range"):
        encode_context({"big": [n]})


def _ext(code: int, payload: bytes) -> bytes:
    return msgpack.packb({"v": msgpack.ExtType(code, payload)}, use_bin_type=True)


@pytest.mark.parametrize(
    "raw",
    [
        _ext(EXT_DATETIME, b"\xc1"),
        _ext(EXT_DATETIME, msgpack.packb(["not a date", None])),
        _ext(EXT_DATETIME, msgpack.packb(["2024-01-01T00:00:00+00:00", "No/Such_Zone"])),
        _ext(EXT_DATETIME, msgpack.packb("2024-01-01")),
        _ext(EXT_DECIMAL, b"twelve"),
        _ext(EXT_DECIMAL, b"\xff"),
        _ext(EXT_UUID, b"short"),
        _ext(42, b"unknown extension"),
        msgpack.packb([1, 2]),
        msgpack.packb("text"),
        msgpack.packb(None),
        b"",
        b"\x81",  # a map announced, nothing in it
        b"\x80\x80",  # trailing bytes
    ],
)
def test_malformed_contexts_raise_decode_error(raw):
    with pytest.raises(DecodeError):
        decode_context(raw)


@given(st.binary(max_size=64))
def test_random_bytes_decode_to_a_dict_or_raise_decode_error(raw):
    try:
        value = decode_context(raw)
    except DecodeError:
        return
    assert type(value) is dict


@given(contexts, st.data())
def test_truncated_contexts_raise_decode_error(ctx, data):
    raw = encode_context(ctx)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DecodeError):
        decode_context(raw[:cut])


@pytest.mark.parametrize("ctx", [None, {}])
def test_no_context_is_the_empty_context(ctx):
    e = Event.create(STEP, "c", "m", "h", 1, 0, "s", "e", 0.0, ctx)
    assert e.context == {}
    assert e.context_raw == encode_context({})


@given(st.datetimes(timezones=fixed_offsets))
def test_fixed_offsets_round_trip_exactly_down_to_the_microsecond(value):
    """datetime.fromisoformat drops an offset's microseconds; the log keeps them."""
    back = roundtrip({"d": value})["d"]
    assert_same_value(value, back)
    assert back == value and back.utcoffset() == value.utcoffset()


@pytest.mark.parametrize("offset", [
    dt.timedelta(microseconds=500_000),
    -dt.timedelta(microseconds=1),
    dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999_999),
    -dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999_999),
    dt.timedelta(hours=5, minutes=30, seconds=7, microseconds=250),
])
def test_sub_second_offsets_at_the_edges_round_trip(offset):
    for value in (dt.datetime(1, 1, 1, tzinfo=dt.timezone(offset)),
                  dt.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.timezone(offset))):
        back = roundtrip({"d": value})["d"]
        assert (back.utcoffset(), back.replace(tzinfo=None)) == (offset, value.replace(tzinfo=None))
