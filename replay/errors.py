"""Errors of replay: rebuilding machines from snapshot + log, scanning, the KCL application."""

from __future__ import annotations

from eventlog.errors import FsmlogError


class ReplayError(FsmlogError):
    """Anything replay refuses on purpose; the message names the machine or log and the fix."""


class UnknownCorrelationId(ReplayError):
    """No snapshot and no log record name this correlation id."""

    def __init__(self, correlation_id: str, where: str):
        self.correlation_id = correlation_id
        super().__init__(
            f"no machine with correlation id {correlation_id!r}: no snapshot in the checkpoint store and no "
            f"record in {where}; check the id, or whether its records are older than the stream's retention"
        )


class UnreadableLog(ReplayError):
    """The configured stream cannot be read back (SNS, SQS, DynamoDB streams are write-only here)."""


class BadPosition(ReplayError):
    """A snapshot's log position that does not fit the log it is read against."""
