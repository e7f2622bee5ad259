"""The scheduled timer: moves retries whose backoff has passed from the retry source into the log.

EventBridge invokes it on a schedule (``rate(1 minute)``) with a "Scheduled
Event" (``source`` "aws.events"). Retry sources that cannot delay (Kinesis, SNS)
and SQS (whose own trigger delivers due messages) have nothing due here; a
DynamoDB or embedded retry table does. It drains in rounds of ``LIMIT`` while
the invocation has time left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..engine import Engine

LIMIT = 100
SPARE_MS = 5_000  # stop starting rounds when less than this is left of the invocation


def run_timer(engine: Engine, context: Any = None, limit: int = LIMIT, max_rounds: int = 100) -> dict[str, int]:
    moved = 0
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        n = engine.run_due_retries(limit)
        moved += n
        if n < limit:
            break
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is not None and remaining() < SPARE_MS:
            break
    return {"requeued": moved, "rounds": rounds}


def handler(event: dict[str, Any], context: Any = None) -> dict[str, int]:
    """Lambda entry point for an EventBridge schedule rule."""
    from .runtime import engine

    return run_timer(engine(), context)
