"""An fsm.yaml machine as an Amazon States Language document, for running it on Step Functions.

The Lambda (``handlers.lambda_handler`` or ``handlers.triggers.stepfunctions.handler``)
runs one step per Task; the state machine carries the record between them:

- one ``Task`` state per fsm state, named after it, invoking the Lambda with
  ``{"fsmlog": record, "retry_count": $$.State.RetryCount, "execution": $$.Execution.Id}``.
  A Task runs the step that *enters* its state (the start record for the initial
  state, a step whose transition targets it otherwise);
- ``Retry``: ``StepRetry`` (an action failed) up to the machine's ``max_retries``
  with the settings' backoff (``RETRY_BASE_SECONDS`` doubling, capped at
  ``RETRY_CAP_SECONDS``, full jitter, like the engine's own retries), and
  ``StepUnavailable`` plus Lambda's transient service errors a few times more;
  anything else is caught into the ``fsmlog.error`` Fail state. ``$$.State.RetryCount``
  counts every retry of the Task, so a retry after a busy service uses up one
  of the machine's retries too;
- one ``Choice`` state (``fsmlog.route``) after every Task: on the returned
  record's kind (``completed`` -> Succeed, ``failed``/``aborted`` -> Fail) and on
  its state and event to the Task of the transition's target (a local transition
  may have moved the machine more than one state, so the state is matched too).

Start an execution with ``{"fsmlog": {"machine": NAME, "context": {...}}}``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from eventlog.settings import DEFAULTS, Settings

if TYPE_CHECKING:
    from projections.definition import Definitions

ROUTE = "fsmlog.route"
COMPLETED = "fsmlog.completed"
FAILED = "fsmlog.failed"
ABORTED = "fsmlog.aborted"
ERROR = "fsmlog.error"
RESERVED = (ROUTE, COMPLETED, FAILED, ABORTED, ERROR)

TRANSIENT_ERRORS = [
    "StepUnavailable",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]
TRANSIENT_ATTEMPTS = 6
MAX_STATE_NAME = 80  # Step Functions' limit on state names


def _setting(settings: Settings | None, name: str) -> Any:
    value = settings.get(name) if settings is not None else None
    return DEFAULTS[name] if value is None else value


def _task_name(state: str) -> str:
    if state in RESERVED:
        return f"{state} (state)"
    return state


def build(definitions: Definitions, machine: str, lambda_arn: str, settings: Settings | None = None) -> dict[str, Any]:
    """The ASL document (a dict, ready for ``json.dumps``) for ``machine``."""
    from projections.errors import DefinitionError

    mdef = definitions.machine(machine)
    too_long = [s.name for s in mdef.states if len(_task_name(s.name)) > MAX_STATE_NAME]
    if too_long:
        raise DefinitionError([
            f"machine {machine!r}: state name {n[:40]!r}... is longer than Step Functions' "
            f"{MAX_STATE_NAME}-character limit" for n in too_long
        ])
    max_retries = mdef.max_retries if mdef.max_retries is not None else int(_setting(settings, "MAX_RETRIES"))
    base = float(_setting(settings, "RETRY_BASE_SECONDS"))
    cap = float(_setting(settings, "RETRY_CAP_SECONDS"))
    step_retry: dict[str, Any] = {
        "ErrorEquals": ["StepRetry"],
        "IntervalSeconds": max(1, math.ceil(base)),
        "BackoffRate": 2.0,
        "MaxAttempts": max_retries,
        "MaxDelaySeconds": max(1, math.ceil(cap)),
        "JitterStrategy": "FULL",
    }
    transient = {
        "ErrorEquals": TRANSIENT_ERRORS,
        "IntervalSeconds": 1,
        "BackoffRate": 2.0,
        "MaxAttempts": TRANSIENT_ATTEMPTS,
        "JitterStrategy": "FULL",
    }
    states: dict[str, Any] = {}
    for s in mdef.states:
        actions = ", ".join(f"{k}={v}" for k, v in (("entry", s.entry_action), ("do", s.do_action)) if v)
        states[_task_name(s.name)] = {
            "Type": "Task",
            "Comment": f"enter state {s.name!r}" + (f" ({actions})" if actions else ""),
            "Resource": lambda_arn,
            "Parameters": {
                "fsmlog.$": "$.fsmlog",
                "retry_count.$": "$$.State.RetryCount",
                "execution.$": "$$.Execution.Id",
            },
            "Retry": [step_retry, transient],
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": ERROR}],
            "Next": ROUTE,
        }
    choices: list[dict[str, Any]] = [
        {"Variable": "$.fsmlog.kind", "StringEquals": "completed", "Next": COMPLETED},
        {"Variable": "$.fsmlog.kind", "StringEquals": "failed", "Next": FAILED},
        {"Variable": "$.fsmlog.kind", "StringEquals": "aborted", "Next": ABORTED},
    ]
    for s in mdef.states:
        for t in s.transitions:
            choices.append({
                "And": [
                    {"Variable": "$.fsmlog.state", "StringEquals": s.name},
                    {"Variable": "$.fsmlog.event", "StringEquals": t.event},
                ],
                "Next": _task_name(t.target),
            })
    states[ROUTE] = {
        "Type": "Choice",
        "Comment": "the record a step returned: end the execution, or run the step its event fires",
        "Choices": choices,
        "Default": ERROR,
    }
    states[COMPLETED] = {"Type": "Succeed", "Comment": "the machine completed"}
    states[FAILED] = {
        "Type": "Fail",
        "Error": "fsmlog.MachineFailed",
        "Cause": f"machine {machine!r} failed; its failed record (error_type, error_message) is in the last "
                 "Task's output and in the log (fsmlog status)",
    }
    states[ABORTED] = {"Type": "Fail", "Error": "fsmlog.MachineAborted", "Cause": f"machine {machine!r} was aborted"}
    states[ERROR] = {
        "Type": "Fail",
        "Error": "fsmlog.StepError",
        "Cause": "a step could not run (a bad record, an exhausted retry of a busy service, or a record "
                 "no transition matches); see the failed Task's error in the execution history",
    }
    return {
        "Comment": f"fsmlog machine {machine!r} (definition {mdef.hash}, from {mdef.source}). Start an execution "
                   f"with {{\"fsmlog\": {{\"machine\": \"{machine}\", \"context\": {{...}}}}}}.",
        "StartAt": _task_name(mdef.initial.name),
        "States": states,
    }
