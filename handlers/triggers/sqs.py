"""SQS trigger: the retry queue, and the log as a queue (``eventlog.backends.sqs``).

Lambda's SQS event: ``Records[]`` with ``eventSource`` "aws:sqs", ``messageId``,
``body`` (here a base64 record) and ``eventSourceARN`` (the queue). Messages of
the configured retry queue (``PRIMARY``/``SECONDARY_RETRY_SOURCE``) have waited
out their backoff as the queue's delay: they are appended to the log as they are
(``Engine.requeue``) and run from there. Messages of any other queue are log
records and run here. A body that is an SNS notification envelope (a topic
subscribed to the queue without raw delivery) is unwrapped first.

With ReportBatchItemFailures, every failed message id is returned; SQS makes
only those visible again.
"""

from __future__ import annotations

import json
from typing import Any

from eventlog.codec import MAX_RECORD_BYTES, decode
from eventlog.errors import DecodeError, FsmlogError
from eventlog.settings import Settings

from ..engine import Engine, Inbound
from ..retries import ScheduledRetry
from . import (
    Bad,
    Outcome,
    deadline_of,
    field_str,
    log,
    park_bad,
    queue_response,
    raw_json,
    records_of,
    run_batch,
    text_bytes,
    unbase64,
)

SOURCE = "aws:sqs"
DUE_ATTRIBUTE = "fsmlog-due"  # set by handlers.retries.sqs
EARLY_SLACK_S = 1.0


def _payload(body: Any) -> Any:
    """The base64 text inside ``body``: the body itself, or an SNS envelope's ``Message``."""
    if isinstance(body, str) and body[:1] == "{":
        try:
            envelope = json.loads(body)
        except ValueError:
            return body
        if isinstance(envelope, dict) and envelope.get("Type") == "Notification" and "Message" in envelope:
            return envelope["Message"]
    return body


def item(rec: Any, index: int) -> Inbound | Bad:
    if not isinstance(rec, dict):
        return Bad(f"#{index}", raw_json(rec), SOURCE, f"#{index}", f"batch item {index} is not a record object")
    source = field_str(rec.get("eventSourceARN")) or SOURCE
    message_id = field_str(rec.get("messageId")) or f"#{index}"
    if rec.get("eventSource") != SOURCE:
        return Bad(message_id, raw_json(rec), source, message_id,
                   f"record of unknown event source {rec.get('eventSource')!r} in an SQS batch")
    body = rec.get("body")
    try:
        raw = unbase64(_payload(body), "SQS message body")
    except ValueError as exc:
        return Bad(message_id, text_bytes(body) if isinstance(body, str) else raw_json(rec), source, message_id, str(exc))
    if len(raw) > MAX_RECORD_BYTES:
        return Bad(message_id, raw, source, message_id, f"record is over the {MAX_RECORD_BYTES}-byte record limit")
    return Inbound(message_id, raw, source, message_id)


def retry_queues(settings: Settings) -> set[str]:
    return {v for v in (settings.PRIMARY_RETRY_SOURCE, settings.SECONDARY_RETRY_SOURCE) if v}


def due_time(rec: Any) -> float | None:
    """The ``fsmlog-due`` message attribute (epoch seconds) the SQS retry source sets, if any."""
    attrs = rec.get("messageAttributes") if isinstance(rec, dict) else None
    attr = attrs.get(DUE_ATTRIBUTE) if isinstance(attrs, dict) else None
    value = attr.get("stringValue") if isinstance(attr, dict) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _requeue(engine: Engine, items: list[tuple[Inbound, float | None]], out: Outcome, failed: set[str]) -> None:
    """Append due retries to the log; wait again for early ones (a backoff longer than SQS' 15-minute
    delay arrives in links); park undecodable ones."""
    good: list[Inbound] = []
    early: list[tuple[Inbound, ScheduledRetry]] = []
    now = engine.clock()
    for it, due in items:
        try:
            record = decode(it.data)
        except DecodeError as exc:
            bad = Bad(it.position, it.data, it.source, it.item_id, f"undecodable retry record: {exc}")
            if park_bad(engine, bad):
                out.parked += 1
            else:
                failed.add(it.item_id)
            continue
        if due is not None and due > now + EARLY_SLACK_S:
            early.append((it, ScheduledRetry(record.correlation_id, it.data, due)))
        else:
            good.append(it)
    if early:
        try:
            engine.services.retries.schedule([r for _, r in early])
        except FsmlogError as exc:
            log.error("could not put %d early retry record(s) back to wait: %s", len(early), exc)
            failed.update(it.item_id for it, _ in early)
        else:
            out.handled += len(early)
    if good:
        try:
            engine.requeue([it.data for it in good])
        except FsmlogError as exc:
            log.error("could not requeue %d retry record(s) to the log: %s", len(good), exc)
            failed.update(it.item_id for it in good)
        else:
            out.handled += len(good)


def handle_sqs_event(event: dict[str, Any], engine: Engine, context: Any = None) -> dict[str, list[dict[str, str]]]:
    records = records_of(event)
    items = [item(rec, i) for i, rec in enumerate(records)]
    retry_arns = retry_queues(engine.settings)
    retries = [(it, due_time(rec)) for it, rec in zip(items, records)
               if isinstance(it, Inbound) and it.source in retry_arns]
    rest = [it for it in items if not (isinstance(it, Inbound) and it.source in retry_arns)]
    out = run_batch(engine, rest, deadline_of(engine, context)) if rest else Outcome()
    failed = set(out.failed)
    if retries:
        _requeue(engine, retries, out, failed)
        engine.flush_metrics()
    out.failed = [it.item_id for it in items if it.item_id in failed]
    return queue_response(out)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, list[dict[str, str]]]:
    """Lambda entry point for an SQS event source mapping."""
    from .runtime import engine

    return handle_sqs_event(event, engine(), context)
