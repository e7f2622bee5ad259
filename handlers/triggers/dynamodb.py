"""DynamoDB Streams trigger: the log as a table (``eventlog.backends.dynamodb``).

Each record's ``dynamodb.NewImage`` holds the log item: ``cid`` (S), ``seq`` (N)
and ``data`` (B, base64 in the event, optionally ``enc`` "zlib"). The stream
view must include new images (NEW_IMAGE or NEW_AND_OLD_IMAGES). ``REMOVE``
records (TTL expiry, cleanup) carry no record to run and are passed over.
Failures are reported like Kinesis: the first sequence number Lambda must
retry from.
"""

from __future__ import annotations

import zlib
from typing import Any

from eventlog.codec import MAX_RECORD_BYTES

from ..engine import Engine, Inbound
from . import (
    Bad,
    deadline_of,
    field_str,
    raw_json,
    records_of,
    run_batch,
    stream_response,
    text_bytes,
    unbase64,
)

SOURCE = "aws:dynamodb"


def item(rec: Any, index: int) -> Inbound | Bad | None:
    """The record's ``Inbound``; ``Bad`` when broken; ``None`` for a removal (nothing to run)."""
    if not isinstance(rec, dict):
        return Bad(f"#{index}", raw_json(rec), SOURCE, f"#{index}", f"batch item {index} is not a record object")
    source = field_str(rec.get("eventSourceARN")) or SOURCE
    body = rec.get("dynamodb")
    body = body if isinstance(body, dict) else {}
    seq = field_str(body.get("SequenceNumber"))
    item_id = seq or field_str(rec.get("eventID")) or f"#{index}"
    position = seq or item_id
    if rec.get("eventSource") != SOURCE:
        return Bad(position, raw_json(rec), source, item_id,
                   f"record of unknown event source {rec.get('eventSource')!r} in a DynamoDB stream batch")
    if seq is None:
        return Bad(position, raw_json(rec), source, item_id, "DynamoDB stream record without dynamodb.SequenceNumber")
    if rec.get("eventName") == "REMOVE":
        return None
    image = body.get("NewImage")
    if not isinstance(image, dict):
        return Bad(position, raw_json(rec), source, item_id,
                   "DynamoDB stream record without NewImage: the table's StreamViewType must be NEW_IMAGE "
                   "or NEW_AND_OLD_IMAGES")
    blob = image.get("data")
    value = blob.get("B") if isinstance(blob, dict) else None
    try:
        raw = unbase64(value, "NewImage.data.B")
    except ValueError as exc:
        return Bad(position, text_bytes(value) if isinstance(value, str) else raw_json(rec), source, item_id, str(exc))
    enc = image.get("enc")
    if isinstance(enc, dict) and enc.get("S") == "zlib":
        try:
            raw = zlib.decompressobj().decompress(raw, MAX_RECORD_BYTES + 1)
        except zlib.error as exc:
            return Bad(position, raw, source, item_id, f"NewImage.data is marked zlib but does not inflate: {exc}")
    if len(raw) > MAX_RECORD_BYTES:
        return Bad(position, raw, source, item_id,
                   f"record is over the {MAX_RECORD_BYTES}-byte record limit")
    return Inbound(position, raw, source, item_id)


def handle_dynamodb_event(event: dict[str, Any], engine: Engine, context: Any = None) -> dict[str, list[dict[str, str]]]:
    items = [it for it in (item(rec, i) for i, rec in enumerate(records_of(event))) if it is not None]
    return stream_response(run_batch(engine, items, deadline_of(engine, context)))


def handler(event: dict[str, Any], context: Any = None) -> dict[str, list[dict[str, str]]]:
    """Lambda entry point for a DynamoDB Streams event source mapping."""
    from .runtime import engine

    return handle_dynamodb_event(event, engine(), context)
