"""Kinesis or SNS as the retry source: neither can delay a message, so a retry is appended at once.

The retry record then reaches a worker through the stream's own trigger, like
any other record; the step's backoff is not honoured (the seed says as much).
``due`` returns nothing and ``done`` has nothing to remove.

API calls: ``schedule`` = the stream backend's append (PutRecords / PublishBatch).
"""

from __future__ import annotations

from collections.abc import Sequence

from eventlog import aws
from eventlog.errors import SettingsError
from eventlog.log import EventLog, OutRecord
from eventlog.settings import Settings

from . import DueRetry, ScheduledRetry


class StreamRetries:
    delays = False  # it cannot hold a record until a due time (see ``Engine``'s warning about timers)

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.name = log.name

    @classmethod
    def from_target(cls, target: str, settings: Settings) -> StreamRetries:
        service = aws.parse_arn(target, "RETRY_SOURCE").service
        if service == "kinesis":
            from eventlog.backends.kinesis import KinesisLog

            return cls(KinesisLog.from_target(target, settings))
        if service == "sns":
            from eventlog.backends.sns import SnsLog

            return cls(SnsLog.from_target(target, settings))
        raise SettingsError(f"retry source {target!r}: only Kinesis and SNS ARNs deliver retries as a stream")

    def schedule(self, retries: Sequence[ScheduledRetry]) -> None:
        if retries:
            self.log.append([OutRecord(r.key, r.data) for r in retries])

    def due(self, now: float, limit: int) -> list[DueRetry]:
        return []

    def done(self, handles: Sequence[str]) -> None:
        return None
