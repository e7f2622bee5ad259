"""Lambda triggers: one module per event source, and the batch plumbing they share.

Every stream or queue trigger does the same three things: turn its transport's
records into engine ``Inbound`` records (or, for a record whose transport is
broken, a ``Bad`` one naming why), park the bad ones, and hand the rest to
``Engine.handle`` in order. ``run_batch`` does the last two and returns the ids
of the records that could be neither handled nor parked, in batch order; the
trigger turns them into Lambda's ``batchItemFailures``.

Nothing here imports boto3: a trigger costs what the engine costs.
"""

from __future__ import annotations

import binascii
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from eventlog.errors import FsmlogError

if TYPE_CHECKING:
    from ..engine import BatchResult, Inbound
    from ..metrics import MetricBuffer
    from ..services import Services

log = logging.getLogger("fsmlog.triggers")


class BatchEngine(Protocol):
    """What a stream trigger needs of the engine: ``Engine`` itself, or the local worker's recorder
    around it (``handlers.worker``), which keeps each batch's result for its counters."""

    @property
    def services(self) -> Services: ...

    @property
    def metrics(self) -> MetricBuffer: ...

    def clock(self) -> float: ...

    def handle(self, records: Sequence[Inbound], deadline: float | None = None) -> BatchResult: ...

    def flush_metrics(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Bad:
    """A record whose transport could not be undone (bad base64, missing fields, unknown source)."""

    position: str
    data: bytes  # the raw bytes as received (the base64 text, or the record's JSON)
    source: str
    item_id: str
    reason: str


@dataclass
class Outcome:
    """What happened to one batch."""

    handled: int = 0
    parked: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)  # item ids neither handled nor parked, in batch order


def raw_json(value: Any) -> bytes:
    """The bytes a dead letter keeps for a record that had no payload to keep."""
    try:
        return json.dumps(value, sort_keys=True, default=repr).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError, RecursionError):
        return repr(value).encode("utf-8", "surrogatepass")


def text_bytes(value: Any) -> bytes:
    """A transport field as bytes, exactly: the text itself for strings, its JSON otherwise."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return raw_json(value)


# RFC 4648 base64, padded, nothing else (not even a newline). Python 3.11's
# ``a2b_base64(strict_mode=True)`` would do on 3.11+ only, and also lets surplus
# padding after a full quad through ("QUJD="), which 3.13 refuses; this refuses
# it on every version.
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def unbase64(value: Any, what: str) -> bytes:
    """Strict base64 decoding; raises ``ValueError`` with a message naming ``what``."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a base64 string, not {type(value).__name__}")
    if _BASE64.fullmatch(value) is None:
        raise ValueError(f"{what} is not valid base64 (a character outside A-Z a-z 0-9 + / or "
                         f"padding out of place); {len(value)} characters")
    return binascii.a2b_base64(value)


def field_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def park_bad(engine: BatchEngine, bad: Bad) -> bool:
    """Park one broken record; False if the dead-letter store itself failed."""
    try:
        engine.services.dead_letters.park(bad.reason, bad.source, bad.position, bad.data, engine.clock())
    except FsmlogError as exc:
        log.error("could not park the record at %s %s (%s): %s", bad.source, bad.position, bad.reason, exc)
        return False
    engine.metrics.count("PoisonRecords")
    log.warning("parked record at %s %s: %s", bad.source, bad.position, bad.reason)
    return True


SAFETY_MARGIN_S = 5.0  # time kept back from Lambda's timeout to append, mark and answer


def deadline_of(engine: BatchEngine, context: Any) -> float | None:
    """The engine-clock time by which a batch must stop starting records, from Lambda's context."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    try:
        left = float(remaining()) / 1000.0
    except (TypeError, ValueError):
        return None
    return engine.clock() + max(0.0, left - min(SAFETY_MARGIN_S, left / 5))


def run_batch(engine: BatchEngine, items: Sequence[Any], deadline: float | None = None) -> Outcome:
    """Park the ``Bad`` items, handle the ``Inbound`` ones in order; never raises for a bad record.

    A service failure while handling (the log, the cache) marks every record the engine
    could not finish as failed; Lambda then delivers them again.
    """
    out = Outcome()
    failed: set[str] = set()
    good = []
    for item in items:
        if isinstance(item, Bad):
            if park_bad(engine, item):
                out.parked += 1
            else:
                failed.add(item.item_id)
        else:
            good.append(item)
    if good:
        try:
            result = engine.handle(good, deadline=deadline)
        except FsmlogError as exc:
            log.error("batch of %d record(s) not handled: %s", len(good), exc)
            failed.update(i.item_id for i in good)
        else:
            out.handled += result.handled
            out.parked += result.parked
            out.skipped += result.skipped
            failed.update(result.failed_item_ids)
    else:
        engine.flush_metrics()
    if failed:
        seen: set[str] = set()
        for item in items:
            if item.item_id in failed and item.item_id not in seen:
                seen.add(item.item_id)
                out.failed.append(item.item_id)
    return out


def stream_response(outcome: Outcome) -> dict[str, list[dict[str, str]]]:
    """Streams (Kinesis, DynamoDB): Lambda checkpoints before the first failure and retries from it."""
    if not outcome.failed:
        return {"batchItemFailures": []}
    return {"batchItemFailures": [{"itemIdentifier": outcome.failed[0]}]}


def queue_response(outcome: Outcome) -> dict[str, list[dict[str, str]]]:
    """Queues (SQS): every failed message is redelivered on its own."""
    return {"batchItemFailures": [{"itemIdentifier": i} for i in outcome.failed]}


def records_of(event: Any) -> list[Any]:
    records = event.get("Records") if isinstance(event, dict) else None
    return records if isinstance(records, list) else []
