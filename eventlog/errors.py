"""The root of fsmlog's one error hierarchy, and the log layer's own errors.

Every package adds its own subclasses (projections.errors, handlers.errors,
replay.errors) so a caller can catch ``FsmlogError`` once and still tell a bad
record from an unreachable service.
"""

from __future__ import annotations


class FsmlogError(Exception):
    """Anything fsmlog raises on purpose. Messages name what, where and the fix."""


class EventlogError(FsmlogError):
    """Errors of the log layer: records, codec, backends."""


class DecodeError(EventlogError):
    """Bytes that are not a valid fsmlog record. Nothing in them is ever executed."""


class RecordTooLarge(EventlogError):
    """A record over the stream's size limit, refused before sending."""


class ContextValueError(EventlogError):
    """A user-context value that cannot travel in the log (named by its key path)."""


class SettingsError(EventlogError):
    """A setting with an invalid value. ``setting`` names it (the first, when several are at fault;
    ``FSMLOG_SETTINGS`` for a settings file or module that cannot be read), or is ``None`` when raised
    without one; the message names it too."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class BackendError(EventlogError):
    """A backing service call failed after its own retries.

    ``code`` is the service's error code (``ConditionalCheckFailedException``,
    ``ResourceNotFoundException`` ...), a client-side failure's class name, or
    the injected fault's name, so callers branch on fields and never on the
    message, which is for people. ``service``, ``operation`` and ``resource``
    (an ARN or URL) say which call failed; any of them is ``None`` when unknown.
    """

    def __init__(self, message: str, *, service: str | None = None, operation: str | None = None,
                 code: str | None = None, resource: str | None = None) -> None:
        super().__init__(message)
        self.service = service
        self.operation = operation
        self.code = code
        self.resource = resource


class ServiceUnavailable(BackendError):
    """A service that could not be reached or keeps refusing; failover may help."""


class ChaosError(ServiceUnavailable):
    """A fault injected on purpose by the AWS_CHAOS setting."""
