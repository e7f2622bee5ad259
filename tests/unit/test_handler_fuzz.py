"""Fuzzing the Lambda entry point with batches that mix good records and every kind of bad one.

Whatever the batch, the handler must not raise, must park every bad record (raw bytes kept exactly)
and must handle every good record of the same batch (none of them in ``batchItemFailures``).
Embedded backend, a fresh SQLite file per example.
"""

from __future__ import annotations

import base64
import json
import tempfile
import uuid
from pathlib import Path

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlog.codec import MAX_RECORD_BYTES, decode, encode
from eventlog.errors import DecodeError
from eventlog.event import START, STEP, Event
from eventlog.settings import SOURCES, load_settings
from handlers import handle_kinesis_event, lambda_handler
from handlers.triggers import runtime, unbase64
from projections.definition import from_dict

HERE = __name__
STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/fuzz"


def ok(context, obj):
    return "ok"


def done(context, obj):
    context["charged"] = True
    return "done"


DEFINITIONS = from_dict({"machines": [{
    "name": "order",
    "states": [
        {"name": "received", "initial": True, "do_action": f"{HERE}.ok",
         "transitions": [{"event": "ok", "target": "charging"}]},
        {"name": "charging", "do_action": f"{HERE}.done", "transitions": [{"event": "done", "target": "shipped"}]},
        {"name": "shipped", "final": True},
    ],
}]})
HASH = DEFINITIONS.machine("order").hash


def decodes(data: bytes) -> bool:
    try:
        decode(data)
    except DecodeError:
        return False
    return True


def is_base64(text: str) -> bool:
    try:
        unbase64(text, "text")  # the triggers' own strict decoder (tests/unit/test_base64_transport.py)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- batch items
# ("good", cid, steps, data) | ("bad", what, record_dict, raw bytes the dead letter must keep)

contexts = st.dictionaries(st.text(max_size=5), st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=8), st.none()), max_size=3)


@st.composite
def good_items(draw):
    cid = uuid.uuid4().hex
    ctx = draw(contexts)
    if draw(st.booleans()):
        ev = Event.create(START, cid, "order", HASH, 0, 0, "received", None, 1.0, ctx)
    else:
        ev = Event.create(STEP, cid, "order", HASH, 1, 0, "received", "ok", 1.0, ctx)
    return ("good", cid, ev.steps, encode(ev))


def _valid_fields() -> list:
    return [1, 1, uuid.uuid4().hex, "order", HASH, 1, 0, "received", "ok", 1.0, None, None, None, b"\x80"]


@st.composite
def bad_payloads(draw):
    """Bytes that decode to nothing runnable, and why."""
    kind = draw(st.sampled_from(["random", "truncated", "wrong_type", "ghost_machine", "bad_event", "bad_state",
                                 "oversized", "bad_context"]))
    if kind == "random":
        data = draw(st.binary(max_size=200).filter(lambda b: not decodes(b)))
    elif kind == "truncated":
        full = encode(Event.create(START, uuid.uuid4().hex, "order", HASH, 0, 0, "received", None, 1.0,
                                   draw(contexts)))
        data = full[: draw(st.integers(0, len(full) - 1))]
    elif kind == "wrong_type":
        fields = _valid_fields()
        index = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 13]))
        fields[index] = draw(st.sampled_from([[1], {"a": 1}, -1, 2.5, True, "x" if index != 7 else 3]))
        data = msgpack.packb(fields, use_bin_type=True)
        if decodes(data):
            data = msgpack.packb(fields[:-1], use_bin_type=True)  # 13 fields: never a record
    elif kind == "ghost_machine":
        data = encode(Event.create(START, uuid.uuid4().hex, "ghost", HASH, 0, 0, "received", None, 1.0, {}))
    elif kind == "bad_event":
        data = encode(Event.create(STEP, uuid.uuid4().hex, "order", HASH, 1, 0, "received",
                                   draw(st.sampled_from(["nope", "done", ""])), 1.0, {}))
    elif kind == "bad_state":
        data = encode(Event.create(STEP, uuid.uuid4().hex, "order", HASH, 1, 0, "limbo", "ok", 1.0, {}))
    elif kind == "bad_context":
        fields = _valid_fields()
        fields[13] = b"\xc1"  # not msgpack
        data = msgpack.packb(fields, use_bin_type=True)
    else:
        data = b"\x00" * (MAX_RECORD_BYTES + draw(st.integers(1, 64)))
    return kind, data


def kinesis_record(seq: int, data_field, source="aws:kinesis") -> dict:
    return {
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "k", "sequenceNumber": str(seq),
                    "data": data_field, "approximateArrivalTimestamp": 1.0},
        "eventSource": source, "eventVersion": "1.0", "eventID": f"shardId-000000000000:{seq}",
        "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::123456789012:role/r",
        "awsRegion": "us-east-1", "eventSourceARN": STREAM,
    }


@st.composite
def bad_items(draw):
    how = draw(st.sampled_from(["payload", "payload", "payload", "base64", "source", "not_a_record", "no_data"]))
    if how == "payload":
        kind, data = draw(bad_payloads())
        return ("bad", kind, base64.b64encode(data).decode(), data)
    if how == "base64":
        text = draw(st.text(min_size=1, max_size=40).filter(lambda t: not is_base64(t)))
        return ("bad", "base64", text, text.encode("utf-8", "surrogatepass"))
    if how == "no_data":
        value = draw(st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=2)))
        return ("bad", "no_data", value, None)  # no payload: the dead letter keeps the whole record
    if how == "source":
        return ("bad", "source", draw(st.sampled_from(["aws:s3", "aws:sqs", "", None, 42])), None)
    return ("bad", "not_a_record", draw(st.one_of(st.integers(), st.text(max_size=10), st.none())), None)


def build_event(items: list) -> tuple[dict, list[bytes]]:
    """The Kinesis event and, per bad item, the raw bytes its dead letter must hold."""
    records, expected = [], []
    for seq, item in enumerate(items, start=1):
        if item[0] == "good":
            records.append(kinesis_record(seq, base64.b64encode(item[3]).decode()))
            continue
        _, what, value, raw = item
        if what == "source":
            rec = kinesis_record(seq, base64.b64encode(b"whatever").decode(), source=value)
            records.append(rec)
            expected.append(json.dumps(rec, sort_keys=True).encode())
        elif what == "not_a_record":
            records.append(value)
            expected.append(json.dumps(value, sort_keys=True).encode())
        else:
            rec = kinesis_record(seq, value)
            records.append(rec)
            expected.append(raw if raw is not None else json.dumps(rec, sort_keys=True).encode())
    return {"Records": records}, expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(items=st.lists(st.one_of(good_items(), bad_items()), min_size=1, max_size=12),
       through_router=st.booleans())
def test_bad_records_are_parked_and_good_ones_in_the_same_batch_handled(items, through_router):
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'fuzz.db'}"
        conf = load_settings({}, **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES}, LEASE_WAIT_SECONDS=0)
        engine = runtime.build_engine(conf, DEFINITIONS)
        runtime.set_engine(engine)
        try:
            event, expected = build_event(items)
            if through_router:
                response = lambda_handler(event, None)
            else:
                response = handle_kinesis_event(event, engine)
            assert response == {"batchItemFailures": []}
            letters = engine.services.dead_letters.list(10_000)
            assert len(letters) == len(expected)
            assert sorted(x.data for x in letters) == sorted(expected)
            appended = [decode(r.data) for r in engine.services.log.read(None, 10_000)]
            progressed = {(ev.correlation_id, ev.steps) for ev in appended}
            for item in items:
                if item[0] == "good":
                    assert (item[1], item[2] + 1) in progressed
            assert len(appended) == sum(1 for item in items if item[0] == "good")
        finally:
            runtime.reset()
