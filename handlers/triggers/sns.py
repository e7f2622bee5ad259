"""SNS trigger: the log as a topic (``eventlog.backends.sns``); each message body is a base64 record.

SNS invokes Lambda asynchronously with one record per event (``Records[].Sns.
{Message, MessageId, TopicArn}``). There is no partial batch response: a record
that could not be handled because a service failed raises, so Lambda's
asynchronous retries (and the function's on-failure destination) take over.
Broken records are parked like everywhere else.
"""

from __future__ import annotations

from typing import Any

from eventlog.codec import MAX_RECORD_BYTES

from ..engine import Engine, Inbound
from ..errors import HandlerError
from . import Bad, deadline_of, field_str, raw_json, records_of, run_batch, text_bytes, unbase64

SOURCE = "aws:sns"


def item(rec: Any, index: int) -> Inbound | Bad:
    if not isinstance(rec, dict):
        return Bad(f"#{index}", raw_json(rec), SOURCE, f"#{index}", f"batch item {index} is not a record object")
    body = rec.get("Sns")
    body = body if isinstance(body, dict) else {}
    source = field_str(body.get("TopicArn")) or field_str(rec.get("EventSubscriptionArn")) or SOURCE
    message_id = field_str(body.get("MessageId")) or f"#{index}"
    if rec.get("EventSource") != SOURCE:
        return Bad(message_id, raw_json(rec), source, message_id,
                   f"record of unknown event source {rec.get('EventSource')!r} in an SNS event")
    message = body.get("Message")
    try:
        raw = unbase64(message, "Sns.Message")
    except ValueError as exc:
        return Bad(message_id, text_bytes(message) if isinstance(message, str) else raw_json(rec), source, message_id, str(exc))
    if len(raw) > MAX_RECORD_BYTES:
        return Bad(message_id, raw, source, message_id, f"record is over the {MAX_RECORD_BYTES}-byte record limit")
    return Inbound(message_id, raw, source, message_id)


def handle_sns_event(event: dict[str, Any], engine: Engine, context: Any = None) -> dict[str, Any]:
    items = [item(rec, i) for i, rec in enumerate(records_of(event))]
    outcome = run_batch(engine, items, deadline_of(engine, context))
    if outcome.failed:
        raise HandlerError(
            f"{len(outcome.failed)} SNS message(s) could not be handled now (a service failed); "
            f"Lambda retries the invocation: {', '.join(outcome.failed)}"
        )
    return {"handled": outcome.handled, "parked": outcome.parked, "skipped": outcome.skipped}


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point for an SNS subscription."""
    from .runtime import engine

    return handle_sns_event(event, engine(), context)
