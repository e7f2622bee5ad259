"""Kinesis Data Streams trigger: the usual way records reach the workers.

Lambda's Kinesis event: ``Records[]`` with ``eventSource`` "aws:kinesis",
``eventID`` "shardId-...:SEQUENCE", ``eventSourceARN`` and ``kinesis.{data
(base64), sequenceNumber, partitionKey, ...}``. With ReportBatchItemFailures on
the event source mapping, Lambda checkpoints before the sequence number we
return and delivers the rest of the batch again, so one item (the first record
that could neither be handled nor parked) is all it needs.
"""

from __future__ import annotations

from typing import Any

from eventlog.codec import MAX_RECORD_BYTES

from ..engine import Inbound
from . import (
    Bad,
    BatchEngine,
    deadline_of,
    field_str,
    raw_json,
    records_of,
    run_batch,
    stream_response,
    text_bytes,
    unbase64,
)

SOURCE = "aws:kinesis"


def item(rec: Any, index: int) -> Inbound | Bad:
    """One Kinesis record as an engine ``Inbound``, or a ``Bad`` naming what is wrong with it."""
    if not isinstance(rec, dict):
        return Bad(f"#{index}", raw_json(rec), SOURCE, f"#{index}", f"batch item {index} is not a record object")
    source = field_str(rec.get("eventSourceARN")) or SOURCE
    body = rec.get("kinesis")
    body = body if isinstance(body, dict) else {}
    seq = field_str(body.get("sequenceNumber"))
    event_id = field_str(rec.get("eventID"))
    item_id = seq or event_id or f"#{index}"
    position = event_id or (f"?:{seq}" if seq else f"#{index}")
    if rec.get("eventSource") != SOURCE:
        return Bad(position, raw_json(rec), source, item_id,
                   f"record of unknown event source {rec.get('eventSource')!r} in a Kinesis batch")
    if seq is None:
        return Bad(position, raw_json(rec), source, item_id, "Kinesis record without kinesis.sequenceNumber")
    data = body.get("data")
    try:
        raw = unbase64(data, "kinesis.data")
    except ValueError as exc:
        return Bad(position, text_bytes(data) if isinstance(data, str) else raw_json(rec), source, item_id, str(exc))
    if len(raw) > MAX_RECORD_BYTES:
        return Bad(position, raw, source, item_id,
                   f"record is {len(raw)} bytes, over the {MAX_RECORD_BYTES}-byte record limit")
    return Inbound(position, raw, source, item_id)


def handle_kinesis_event(event: dict[str, Any], engine: BatchEngine, context: Any = None) -> dict[str, list[dict[str, str]]]:
    """Handle one Kinesis batch with ``engine``; returns Lambda's partial batch response."""
    items = [item(rec, i) for i, rec in enumerate(records_of(event))]
    return stream_response(run_batch(engine, items, deadline_of(engine, context)))


def handler(event: dict[str, Any], context: Any = None) -> dict[str, list[dict[str, str]]]:
    """Lambda entry point for a Kinesis event source mapping."""
    from .runtime import engine

    return handle_kinesis_event(event, engine(), context)
