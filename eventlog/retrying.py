"""The one retry policy of fsmlog's AWS calls: tenacity, short full-jitter backoff, few attempts.

It covers two cases with the same attempts and backoff:

* a call that raises throttling, a 5xx or a lost connection (:func:`retrying`);
* a batch call that answers with some entries refused: PutRecords'
  ``FailedRecordCount``, BatchWriteItem's ``UnprocessedItems``, the ``Failed``
  list of SendMessageBatch / PublishBatch / DeleteMessageBatch
  (:func:`resend_refused`). Only the refused entries are sent again.

botocore's own retries are off (see :func:`eventlog.aws.client`) so that, once
this policy gives up, failover takes over quickly instead of a Lambda spending
its time budget inside botocore. The pause is always passed in (``sleep``), so
tests skip it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

ATTEMPTS = 5
BACKOFF_BASE = 0.05  # seconds: the first retry waits up to this, each next one up to twice as long
BACKOFF_CAP = 1.0  # seconds

THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "LimitExceededException",
        "SlowDown",
        "RequestThrottled",
        "RequestThrottledException",
        "KMSThrottlingException",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
    }
)

T = TypeVar("T")
Sleep = Callable[[float], None]


def _error(exc: BaseException) -> dict[str, Any]:
    """The error part of a botocore answer: a ClientError's, or the last one a waiter saw."""
    response = getattr(exc, "response", None) or getattr(exc, "last_response", None) or {}
    return response if isinstance(response, dict) else {}


def error_code(exc: BaseException) -> str:
    """The AWS error code botocore reported (``""`` when there is none)."""
    return str(_error(exc).get("Error", {}).get("Code", "") or "")


def http_status(exc: BaseException) -> int:
    return int(_error(exc).get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_transient(exc: BaseException) -> bool:
    """Throttling, 5xx and lost connections: worth another try after a pause.

    A waiter that stopped on such an error counts too (waiting again is harmless).
    """
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, WaiterError

    if isinstance(exc, ClientError | WaiterError):
        return error_code(exc) in THROTTLING_CODES or http_status(exc) >= 500
    return isinstance(exc, ConnectionError | HTTPClientError)


def _policy(retry: Any, *, sleep: Sleep, attempts: int, base: float, cap: float,
            before_sleep: Callable[[Any], None] | None = None) -> Any:
    import tenacity

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, attempts)),
        wait=tenacity.wait_random_exponential(multiplier=base, max=cap),
        retry=retry,
        sleep=sleep,
        before_sleep=before_sleep,
        # out of attempts: hand back the last outcome as it was (raise its exception, or return its result)
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
    )


def retrying(*, sleep: Sleep, attempts: int = ATTEMPTS, retry_if: Callable[[BaseException], bool] = is_transient,
             base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP,
             before_sleep: Callable[[Any], None] | None = None) -> Any:
    """A ``tenacity.Retrying`` that calls again while the call raises what ``retry_if`` accepts
    (by default :func:`is_transient`); the last failure is raised unchanged."""
    import tenacity

    return _policy(tenacity.retry_if_exception(retry_if), sleep=sleep, attempts=attempts, base=base, cap=cap,
                   before_sleep=before_sleep)


def resend_refused(send: Callable[[list[T]], Sequence[T]], entries: Sequence[T], *, sleep: Sleep,
                   attempts: int = ATTEMPTS) -> list[T]:
    """Send ``entries`` with ``send``, which returns the ones the service refused; resend only those,
    with the policy's backoff. Returns what is still refused after the last attempt (empty: all in).

    What ``send`` raises is not retried here: the call inside it already went through :func:`retrying`.
    """
    import tenacity

    pending = list(entries)
    if not pending:
        return []

    def attempt() -> list[T]:
        nonlocal pending
        pending = list(send(pending))
        return pending

    return _policy(tenacity.retry_if_result(bool), sleep=sleep, attempts=attempts, base=BACKOFF_BASE,
                   cap=BACKOFF_CAP)(attempt)
