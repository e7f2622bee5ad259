"""The wire format: exact round trips, strict decoding, the record size limit."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog.codec import (
    MAX_RECORD_BYTES,
    MAX_SEEN,
    VERSION,
    VERSIONS,
    decode,
    decode_fields,
    decode_many,
    encode,
)
from eventlog.errors import DecodeError, RecordTooLarge
from eventlog.event import KINDS, STEP, Event
from tests.strategies import assert_same_value, contexts, runs, small_contexts

U64 = st.integers(0, 2**64 - 1)
names = st.text(min_size=1, max_size=20)
opt_text = st.none() | st.text(max_size=30)


@st.composite
def events(draw: Any, context: st.SearchStrategy[dict[str, Any]] = small_contexts) -> Event:
    """Any well-formed record: every field over its whole allowed range."""
    return Event.create(
        draw(st.sampled_from(KINDS)),
        draw(names),
        draw(names),
        draw(st.text(max_size=64)),
        draw(U64),
        draw(U64),
        draw(st.text(max_size=20)),
        draw(opt_text),
        draw(st.floats(allow_nan=False)),
        draw(context),
        error_type=draw(opt_text),
        error_message=draw(opt_text),
        upgraded_from=draw(opt_text),
        due=draw(st.none() | st.floats(allow_nan=False)),
        event_id=draw(opt_text),
        seen=tuple(draw(st.lists(st.text(max_size=12), max_size=MAX_SEEN))),
        parent=draw(st.none() | names),
    )


@given(events(contexts))
def test_decode_inverts_encode(e):
    back = decode(encode(e))
    assert back == e
    assert type(back.time) is float
    assert_same_value(e.context, back.context)


@given(events())
def test_decode_fields_are_event_fields_in_order(e):
    assert Event(*decode_fields(encode(e))) == e


@given(runs())
def test_engine_shaped_runs_round_trip(r):
    raw = [encode(e) for e in r.events]
    assert decode_many(raw) == r.events


@given(events())
def test_buffer_types_decode_like_bytes(e):
    data = encode(e)
    assert decode(bytearray(data)) == e
    assert decode(memoryview(data)) == e


@pytest.mark.parametrize("data", ["text", None, 12, [b"\x90"]], ids=repr)
def test_non_bytes_input_is_a_decode_error(data):
    with pytest.raises(DecodeError, match="must be bytes"):
        decode(data)


def test_an_integer_time_decodes_as_float():
    e = Event.create(STEP, "c", "m", "h", 1, 0, "s", "e", 0.0)
    fields = msgpack.unpackb(encode(e))
    fields[9] = 1700000000
    back = decode(msgpack.packb(fields, use_bin_type=True))
    assert back.time == 1700000000.0 and type(back.time) is float


@given(events(), st.data())
def test_every_truncation_is_a_decode_error(e, data):
    raw = encode(e)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DecodeError):
        decode(raw[:cut])


def test_every_prefix_of_one_record_is_a_decode_error():
    raw = encode(Event.create(STEP, "c-1", "order", "abc", 3, 1, "charged", "ok", 1.5, {"amount": 12},
                              error_type="E", error_message="m", upgraded_from="old"))
    for cut in range(len(raw)):
        with pytest.raises(DecodeError):
            decode(raw[:cut])


@given(events(), st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_a_decode_error(e, extra):
    with pytest.raises(DecodeError):
        decode(encode(e) + extra)


@given(st.binary(max_size=200))
def test_random_bytes_raise_nothing_but_decode_error(data):
    try:
        e = decode(data)
    except DecodeError:
        return
    assert encode(e) is not None  # whatever decodes is a well-formed record again


any_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=6,
)


@given(st.lists(any_value, min_size=12, max_size=16), st.booleans())
def test_random_msgpack_arrays_raise_nothing_but_decode_error(fields, versioned):
    if versioned:
        fields[0] = VERSION
    try:
        decode(msgpack.packb(fields, use_bin_type=True))
    except DecodeError:
        pass


def _accepts(index: int, value: Any) -> bool:
    """What decode accepts in each field of the 14-field array (codec.py's layout)."""
    t = type(value)
    if index == 0:
        return t is int and value == VERSION
    if index == 1:
        return t is int and 0 <= value < len(KINDS)
    if index in (2, 3):
        return t is str and value != ""
    if index in (4, 7):
        return t is str
    if index in (5, 6):
        return t is int and value >= 0
    if index == 9:
        return t in (int, float)
    if index in (8, 10, 11, 12):
        return value is None or t is str
    return t is bytes


@given(events(), st.integers(0, 13), any_value)
def test_a_field_of_the_wrong_type_is_a_decode_error(e, index, value):
    fields = msgpack.unpackb(encode(e), raw=False)
    fields[index] = value
    data = msgpack.packb(fields, use_bin_type=True)
    if _accepts(index, value):
        decode(data)
    else:
        with pytest.raises(DecodeError, match="not an fsmlog record"):
            decode(data)


def _fields() -> list[Any]:
    return msgpack.unpackb(encode(Event.create(STEP, "c", "m", "h", 1, 0, "s", "e", 2.0)), raw=False)


@pytest.mark.parametrize("version", [0, 3, 99, -1, True, "1", 1.0, None])
def test_unknown_versions_are_refused(version):
    fields = _fields()
    fields[0] = version
    with pytest.raises(DecodeError, match="unknown record version"):
        decode(msgpack.packb(fields, use_bin_type=True))


def test_a_newer_version_with_more_fields_is_refused_by_version():
    fields = [*_fields(), [None, None, []], "a new field"]
    fields[0] = max(VERSIONS) + 1
    with pytest.raises(DecodeError, match=f"unknown record version {max(VERSIONS) + 1}"):
        decode(msgpack.packb(fields, use_bin_type=True))


@pytest.mark.parametrize("kind", [len(KINDS), 99, -1, "step", None, True])
def test_unknown_kinds_are_refused(kind):
    fields = _fields()
    fields[1] = kind
    with pytest.raises(DecodeError, match="unknown kind"):
        decode(msgpack.packb(fields, use_bin_type=True))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        msgpack.packb({"kind": "step"}),
        msgpack.packb(_fields()[:13]),
        msgpack.packb([*_fields(), None]),
        msgpack.packb(list(range(100))),
        msgpack.packb(msgpack.ExtType(1, b"x")),
        b"\xc1",  # never used in msgpack
    ],
)
def test_records_of_the_wrong_shape_are_refused(data):
    with pytest.raises(DecodeError, match="not an fsmlog record"):
        decode(data)


def test_decode_error_shows_the_first_bytes_not_the_whole_record():
    data = b"\xc1" + b"z" * 5000
    with pytest.raises(DecodeError) as err:
        decode(data)
    assert len(str(err.value)) < 300
    assert "5001 bytes" in str(err.value)


def _big(size: int, cid: str = "cid-big", steps: int = 17) -> Event:
    return Event.create(STEP, cid, "invoice", "h", steps, 0, "s", "e", 1.0, {"blob": b"x" * size})


def test_record_over_one_mebibyte_is_refused_naming_machine_step_and_size():
    e = _big(MAX_RECORD_BYTES)
    size = len(encode(e, limit=1 << 62)) + len(e.correlation_id)
    with pytest.raises(RecordTooLarge) as err:
        encode(e)
    message = str(err.value)
    assert "'invoice'" in message and "cid-big" in message and "step 17" in message
    assert f"{size} bytes" in message and str(MAX_RECORD_BYTES) in message


@given(st.integers(0, 200), st.text(min_size=1, max_size=40))
def test_the_limit_counts_record_and_partition_key(extra, cid):
    e = _big(1000 + extra, cid=cid)
    size = len(encode(e, limit=1 << 62)) + len(cid.encode())
    assert decode(encode(e, limit=size)) == e
    with pytest.raises(RecordTooLarge, match=f"is {size} bytes"):
        encode(e, limit=size - 1)


def test_the_default_limit_is_exact_at_one_mebibyte():
    def size(n: int) -> int:
        return len(encode(_big(n), limit=1 << 62)) + len("cid-big")

    n = MAX_RECORD_BYTES
    while size(n) > MAX_RECORD_BYTES:
        n -= size(n) - MAX_RECORD_BYTES
    assert size(n) == MAX_RECORD_BYTES  # bin headers are fixed-size in this range: the fit is exact
    assert decode(encode(_big(n))) == _big(n)
    with pytest.raises(RecordTooLarge):
        encode(_big(n + 1))


def test_a_record_that_neither_waits_nor_was_sent_keeps_version_1():
    """Logs written before timers and external events stay byte-identical (golden logs, hashes)."""
    assert msgpack.unpackb(encode(Event.create(STEP, "c", "m", "h", 1, 0, "s", "e", 2.0)))[0] == VERSION


@pytest.mark.parametrize("extra", [[1.0, None], "x", [None, 5, []], [None, None, [1]], ["soon", None, []],
                                   [None, None, ["x"] * (MAX_SEEN + 1)],
                                   [None, None, [], ""], [None, None, [], 3], [None, None, [], "p", 1]], ids=repr)
def test_a_malformed_wait_field_is_a_decode_error(extra):
    fields = [*_fields(), extra]
    fields[0] = 2
    with pytest.raises(DecodeError, match="not an fsmlog record"):
        decode(msgpack.packb(fields, use_bin_type=True))
