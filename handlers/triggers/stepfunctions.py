"""Step Functions task: run exactly one step of a machine and return the next record.

The state machine (``fsmlog export-asl``, ``handlers/asl.py``) invokes this Lambda
from one Task state per machine state with::

    {"fsmlog": RECORD, "retry_count": $$.State.RetryCount, "execution": $$.Execution.Id}

``RECORD`` is the JSON form of a log record (``record_json``): ``data`` (the
encoded record, base64, the only field read back) plus its readable fields
(``kind``, ``state``, ``event``, ...) for the state machine's Choice state. An
execution may also start from ``{"fsmlog": {"machine": NAME, "context": {...},
"correlation_id": optional}}``; the start record is then appended to the log and run.

The output is ``{"fsmlog": NEXT_RECORD}``. The step's records still go to the log
(the stream is the audit trail and ``fsmlog status`` reads it), but a failed
action is not put in the retry source: the handler raises ``StepRetry`` and the
Task's ``Retry`` (the machine's ``max_retries``, the settings' backoff) runs it
again; ``retry_count`` tells the engine which attempt it is, so the last one
appends the ``failed`` record and the state machine ends in its Fail state.
``StepUnavailable`` (a service or lease was busy) is retried too; ``PoisonRecord``
(an input that can never run; it is parked) is not.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventlog.codec import decode, encode
from eventlog.errors import ContextValueError, DecodeError, FsmlogError
from eventlog.event import RETRY, START, Event
from eventlog.log import OutRecord

from ..engine import Engine, Inbound
from ..errors import HandlerError, PoisonRecord
from . import Bad, park_bad, text_bytes, unbase64

SOURCE = "states"


class StepRetry(HandlerError):
    """The step's action failed and may be retried: the Task's Retry runs it again."""


class StepUnavailable(HandlerError):
    """A backing service failed or the machine's lease was busy: the Task's Retry runs it again."""


def record_json(ev: Event, data: bytes | None = None) -> dict[str, Any]:
    """The JSON form of a record as the state machine passes it between states."""
    import base64

    raw = data if data is not None else encode(ev)
    return {
        "data": base64.b64encode(raw).decode("ascii"),
        "kind": ev.kind,
        "correlation_id": ev.correlation_id,
        "machine": ev.machine,
        "state": ev.state,
        "event": ev.event,
        "steps": ev.steps,
        "retries": ev.retries,
        "time": ev.time,
        "error_type": ev.error_type,
        "error_message": ev.error_message,
    }


def _start_record(engine: Engine, spec: dict[str, Any]) -> tuple[Event, bytes]:
    from projections.errors import UnknownMachine

    name = spec.get("machine")
    context = spec.get("context") or {}
    if not isinstance(name, str) or not isinstance(context, dict):
        raise PoisonRecord(
            "Step Functions input must be {\"fsmlog\": {\"data\": BASE64_RECORD}} or "
            "{\"fsmlog\": {\"machine\": NAME, \"context\": {...}}}"
        )
    try:
        mdef = engine.definitions.machine(name)
    except UnknownMachine as exc:
        raise PoisonRecord(str(exc)) from None
    cid = spec.get("correlation_id") or uuid.uuid4().hex
    try:
        ev = Event.create(START, str(cid), name, mdef.hash, 0, 0, mdef.initial.name, None, engine.clock(), context)
    except ContextValueError as exc:
        raise PoisonRecord(str(exc)) from None
    data = encode(ev)
    try:
        engine.services.log.append([OutRecord(ev.correlation_id, data)])
    except FsmlogError as exc:
        raise StepUnavailable(f"could not append the start record of {ev.describe()}: {exc}") from exc
    return ev, data


def handle_task(event: dict[str, Any], engine: Engine) -> dict[str, Any]:
    """Run the step of ``event["fsmlog"]``; return ``{"fsmlog": next record}`` or raise (see module doc)."""
    spec = event.get("fsmlog")
    execution = event.get("execution")
    source = execution if isinstance(execution, str) else SOURCE
    if not isinstance(spec, dict):
        raise PoisonRecord(f"Step Functions input field 'fsmlog' must be an object, not {type(spec).__name__}")
    if "data" in spec:
        position = f"{spec.get('correlation_id', '?')}:{spec.get('steps', '?')}"
        raw = None
        try:
            raw = unbase64(spec["data"], "fsmlog.data")
            record = decode(raw)
        except (ValueError, DecodeError) as exc:
            kept = raw if raw is not None else text_bytes(spec["data"])
            park_bad(engine, Bad(position, kept, source, position, str(exc)))
            engine.flush_metrics()
            raise PoisonRecord(f"task input is not an fsmlog record (parked): {exc}") from None
    else:
        record, raw = _start_record(engine, spec)
    if record.terminal:
        return {"fsmlog": record_json(record, raw)}
    attempt = event.get("retry_count")
    if type(attempt) is int and attempt > 0:
        record = record.evolve(kind=RETRY, retries=record.retries + attempt)
        raw = encode(record)
    position = f"{record.correlation_id}:{record.steps}:{record.retries}"
    seen: list[tuple[Event, Event | None, str]] = []
    engine.on_step = lambda rec, nxt, outcome: seen.append((rec, nxt, outcome))
    try:
        result = engine.handle([Inbound(position, raw, source, position)])
    except FsmlogError as exc:
        raise StepUnavailable(f"{record.describe()} not run: {exc}") from exc
    finally:
        engine.on_step = None
    if result.parked:
        reason = next((o.get("reason") for o in result.outcomes if o.get("outcome") == "parked"), "parked")
        raise PoisonRecord(f"{record.describe()} can never run (parked): {reason}")
    if result.failed_item_ids:
        raise StepUnavailable(f"{record.describe()} not run now (a service or the machine's lease was busy)")
    if seen:
        _, nxt, outcome = seen[-1]
        if outcome == "retry" or nxt is None:
            why = f"{nxt.error_type}: {nxt.error_message}" if nxt is not None else "the step failed"
            raise StepRetry(f"{record.describe()} failed, attempt {record.retries + 1}: {why}")
        return {"fsmlog": record_json(nxt)}
    # skipped: this step already ran (a redelivered task) or the machine was aborted; report where it is
    state = engine.status(record.correlation_id)
    if state is not None and (state.terminal or state.steps > record.steps):
        return {"fsmlog": record_json(state.last)}
    raise StepUnavailable(f"{record.describe()} was not run and the machine has not moved on yet")


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point for a Step Functions Task state."""
    from .runtime import step_engine

    return handle_task(event, step_engine())
