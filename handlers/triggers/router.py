"""One Lambda entry point for every trigger: tell the event's shape, call that trigger's handler.

Shapes (as Lambda delivers them):

- ``Records[]`` with ``eventSource`` "aws:kinesis" / "aws:dynamodb" / "aws:sqs", or
  ``EventSource`` "aws:sns": the stream and queue triggers. A batch none of whose
  records has a known source is parked record by record (there is nothing to run).
- ``{"fsmlog": ...}``: a Step Functions task.
- ``detail-type`` "Scheduled Event" / ``source`` "aws.events": the retry timer.
- ``httpMethod`` (REST API, payload 1.0) or ``requestContext.http`` (HTTP API,
  payload 2.0): API Gateway.

Anything else raises ``UnknownEvent`` naming the keys it saw.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import HandlerError

if TYPE_CHECKING:
    from ..engine import Engine

RECORD_SOURCES = {
    "aws:kinesis": "kinesis",
    "aws:dynamodb": "dynamodb",
    "aws:sqs": "sqs",
    "aws:sns": "sns",
}


class UnknownEvent(HandlerError):
    """An invocation whose event is none of the shapes fsmlog handles."""


def _source(rec: Any) -> Any:
    if not isinstance(rec, dict):
        return None
    return rec.get("eventSource") or rec.get("EventSource")


ARN_SERVICES = {"kinesis": "kinesis", "dynamodb": "dynamodb", "sqs": "sqs", "sns": "sns"}


def _batch_kind(records: list[Any]) -> str:
    """The trigger of a batch. Lambda never mixes sources in one batch, but a damaged record may claim
    another source: every record votes with its event source and its source ARN's service, the most
    votes win (the first one seen on a tie), and the records that disagree are parked by the trigger."""
    votes: dict[str, int] = {}
    for rec in records:
        kind = RECORD_SOURCES.get(_source(rec))
        if kind is not None:
            votes[kind] = votes.get(kind, 0) + 1
        if isinstance(rec, dict):
            arn = rec.get("eventSourceARN") or rec.get("EventSubscriptionArn")
            parts = arn.split(":") if isinstance(arn, str) else []
            by_arn = ARN_SERVICES.get(parts[2]) if len(parts) > 2 and parts[0] == "arn" else None
            if by_arn is not None:
                votes[by_arn] = votes.get(by_arn, 0) + 1
    if not votes:
        return "records"
    return max(votes, key=lambda k: votes[k])  # dicts keep insertion order: ties go to the first seen


def classify(event: Any) -> str:
    """The trigger an event belongs to: kinesis, dynamodb, sqs, sns, records (none known),
    stepfunctions, timer or apigateway."""
    if not isinstance(event, dict):
        raise UnknownEvent(f"fsmlog cannot handle an event of type {type(event).__name__}; expected a JSON object")
    records = event.get("Records")
    if isinstance(records, list):
        return _batch_kind(records)
    if "fsmlog" in event:
        return "stepfunctions"
    if event.get("detail-type") == "Scheduled Event" or event.get("source") == "aws.events":
        return "timer"
    ctx = event.get("requestContext")
    if "httpMethod" in event or (isinstance(ctx, dict) and isinstance(ctx.get("http"), dict)):
        return "apigateway"
    keys = ", ".join(sorted(map(str, event))) or "(none)"
    raise UnknownEvent(
        f"fsmlog cannot tell what invoked it: the event has keys {keys}; expected Records from Kinesis, "
        "DynamoDB Streams, SNS or SQS, an EventBridge scheduled event, an API Gateway proxy request or a "
        "Step Functions task input {\"fsmlog\": ...}"
    )


def park_records(event: dict[str, Any], engine: Engine) -> dict[str, list[dict[str, str]]]:
    """A batch without a record of a known source: park every record as it came."""
    from . import Bad, raw_json, run_batch, stream_response

    items = []
    for i, rec in enumerate(event.get("Records") or []):
        source = _source(rec)
        arn = rec.get("eventSourceARN") if isinstance(rec, dict) else None
        items.append(Bad(f"#{i}", raw_json(rec), str(arn or source or "?"), f"#{i}",
                         f"record of unknown event source {source!r}"))
    return stream_response(run_batch(engine, items))


def dispatch(event: Any, context: Any = None, engine: Engine | None = None) -> Any:
    """Route ``event`` to its trigger, with ``engine`` or the container's engine."""
    kind = classify(event)
    from . import runtime

    if kind == "stepfunctions":
        from .stepfunctions import handle_task

        return handle_task(event, engine if engine is not None else runtime.step_engine())
    eng = engine if engine is not None else runtime.engine()
    if kind == "kinesis":
        from .kinesis import handle_kinesis_event

        return handle_kinesis_event(event, eng, context)
    if kind == "dynamodb":
        from .dynamodb import handle_dynamodb_event

        return handle_dynamodb_event(event, eng, context)
    if kind == "sqs":
        from .sqs import handle_sqs_event

        return handle_sqs_event(event, eng, context)
    if kind == "sns":
        from .sns import handle_sns_event

        return handle_sns_event(event, eng, context)
    if kind == "timer":
        from .timer import run_timer

        return run_timer(eng, context)
    if kind == "apigateway":
        from .apigateway import handle_api_event

        return handle_api_event(event, eng)
    return park_records(event, eng)
