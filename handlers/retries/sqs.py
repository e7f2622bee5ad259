"""SQS retries: a failed step waits as a delayed message.

SQS delays a message by at most 15 minutes. Every message carries its due
time in the attribute ``fsmlog-due``; one received before that time (a wait
longer than 15 minutes, sent with the maximum delay) is sent again with the
next delay and the received copy deleted, so a long wait is a chain of
delayed messages. ``due`` never returns a message early.

The body is the base64 of the retry record. Received messages stay invisible
for ``claim_seconds`` (the lease length): one not ``done`` by then comes back
(at-least-once). The queue must be a standard queue: FIFO queues refuse
per-message delays.

API calls: ``schedule`` = one GetQueueUrl per instance + one SendMessageBatch
per 10; ``due`` = one ReceiveMessage per 10 messages (+ a final empty one),
plus one SendMessageBatch and one DeleteMessageBatch per 10 early messages
re-chained; ``done`` = one DeleteMessageBatch per 10.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from eventlog import aws
from eventlog.backends.sqs import Queue
from eventlog.errors import SettingsError
from eventlog.settings import Settings

from . import DueRetry, ScheduledRetry

DUE_ATTRIBUTE = "fsmlog-due"
KEY_ATTRIBUTE = "fsmlog-key"
MAX_DELAY = 900  # SQS' own maximum DelaySeconds


class SqsRetries:
    def __init__(self, arn: str, settings: Settings | None = None, *, client: Any = None,
                 clock: Callable[[], float] = time.time, max_delay: int = MAX_DELAY,
                 claim_seconds: float | None = None) -> None:
        self.queue = Queue(arn, settings, client)
        if self.queue.fifo:
            raise SettingsError(
                f"retry source {arn!r} is a FIFO queue; SQS refuses per-message delays on FIFO queues, "
                f"use a standard queue"
            )
        self.arn = arn
        self.name = arn
        self.clock = clock
        self.max_delay = max(0, min(MAX_DELAY, int(max_delay)))
        if claim_seconds is None:
            claim_seconds = float(settings.LEASE_SECONDS) if settings is not None else 60.0
        self.claim_seconds = max(0, min(43_200, math.ceil(claim_seconds)))

    @classmethod
    def from_target(cls, target: str, settings: Settings) -> SqsRetries:
        return cls(target, settings)

    @classmethod
    def create(cls, target: str, settings: Settings) -> SqsRetries:
        """Create the queue (idempotent); for ``fsmlog resources create`` and tests."""
        store = cls(target, settings)
        store.queue.create()
        return store

    def _send(self, items: Sequence[tuple[str, bytes, float]], now: float) -> None:
        self.queue.send([
            (key, data, {
                "DelaySeconds": aws.ceil_delay(due, now, self.max_delay),
                "MessageAttributes": {
                    DUE_ATTRIBUTE: {"DataType": "Number", "StringValue": repr(float(due))},
                    KEY_ATTRIBUTE: {"DataType": "String", "StringValue": key},
                },
            })
            for key, data, due in items
        ])

    def schedule(self, retries: Sequence[ScheduledRetry]) -> None:
        self._send([(r.key, r.data, r.due) for r in retries], self.clock())

    def due(self, now: float, limit: int) -> list[DueRetry]:
        out: list[DueRetry] = []
        rounds = math.ceil(max(limit, 1) / 10) + 2  # early messages are re-chained, not spun on forever
        for _ in range(rounds):
            if len(out) >= limit:
                break
            response = self.queue.api(
                "receive_message",
                QueueUrl=self.queue.url,
                MaxNumberOfMessages=max(1, min(10, limit - len(out))),
                WaitTimeSeconds=0,
                VisibilityTimeout=self.claim_seconds,
                MessageAttributeNames=[DUE_ATTRIBUTE, KEY_ATTRIBUTE],
            )
            messages = response.get("Messages", [])
            if not messages:
                break
            early: list[tuple[str, bytes, float]] = []
            early_handles: list[str] = []
            for m in messages:
                data = base64.b64decode(m["Body"])
                attrs = m.get("MessageAttributes") or {}
                due_at = float(attrs.get(DUE_ATTRIBUTE, {}).get("StringValue", "0") or 0)
                if due_at > now:
                    key = attrs.get(KEY_ATTRIBUTE, {}).get("StringValue", "")
                    early.append((key, data, due_at))
                    early_handles.append(m["ReceiptHandle"])
                else:
                    out.append(DueRetry(m["ReceiptHandle"], data, due_at))
            if early:
                self._send(early, now)  # the next link first: a crash in between repeats, never loses
                self.done(early_handles)
        return out

    def done(self, handles: Sequence[str]) -> None:
        unique = list(dict.fromkeys(handles))

        def delete(group: list[str]) -> dict[int, tuple[str, str, bool]]:
            response = self.queue.api(
                "delete_message_batch",
                QueueUrl=self.queue.url,
                Entries=[{"Id": str(n), "ReceiptHandle": h} for n, h in enumerate(group)],
            )
            # a sender fault here is a handle that expired or was already used: nothing left to delete
            return {int(f["Id"]): (f.get("Code", ""), f.get("Message", ""), False)
                    for f in response.get("Failed", []) if not f.get("SenderFault")}

        for group in aws.chunks(unique, aws.MESSAGE_BATCH):
            aws.send_entries(group, delete, service="sqs", operation="DeleteMessageBatch", resource=self.arn)
