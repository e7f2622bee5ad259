"""fsmlog's Lambda entry points.

``handlers.lambda_handler`` serves every trigger (it tells them apart by the
event's shape, see ``handlers.triggers.router``); each trigger also has its own
entry point (``handlers.triggers.kinesis.handler``, ``...dynamodb.handler``,
``...sns.handler``, ``...sqs.handler``, ``...timer.handler``,
``...apigateway.handler``, ``...stepfunctions.handler``).

Importing this package is cheap on purpose (a Lambda cold start pays for it):
the engine, its backends and boto3 are imported on the first invocation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .triggers import BatchEngine


def lambda_handler(event: Any, context: Any = None) -> Any:
    """The Lambda entry point for every trigger."""
    from .triggers.router import dispatch

    return dispatch(event, context)


def handle_kinesis_event(event: dict[str, Any], engine: BatchEngine, context: Any = None) -> dict[str, list[dict[str, str]]]:
    """Handle a Lambda-shaped Kinesis batch with ``engine``: ``{"batchItemFailures": [...]}``."""
    from .triggers.kinesis import handle_kinesis_event as handle

    return handle(event, engine, context)
