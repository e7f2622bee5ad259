"""SQS as the log: each record is a message whose body is the base64 of its bytes.

SQS cannot be read back by fsmlog itself (receiving consumes); the SQS Lambda
trigger reads it. FIFO queues (name ends in ``.fifo``) get ``MessageGroupId``
= the correlation id. Positions are SQS message ids.

API calls: one GetQueueUrl per instance (first use), then one SendMessageBatch
per 10 records (or 256 KiB), plus one per resend of refused entries.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from .. import aws
from ..log import OutRecord
from ..settings import Settings


class Queue:
    """An SQS queue named by its ARN; resolves (once) and caches the queue URL."""

    def __init__(self, arn: str, settings: Settings | None = None, client: Any = None) -> None:
        parsed = aws.parse_arn(arn)
        aws.require(parsed, "sqs", "", arn)
        self.arn = arn
        self.queue_name = parsed.name
        self.account = parsed.account
        self.fifo = parsed.name.endswith(".fifo")
        self.api = aws.api("sqs", arn, settings, client)
        self._url: str | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        if self._url is None:
            with self._lock:
                if self._url is None:
                    params = {"QueueName": self.queue_name}
                    if self.account:
                        params["QueueOwnerAWSAccountId"] = self.account
                    self._url = self.api("get_queue_url", **params)["QueueUrl"]
        return self._url

    def create(self, attributes: dict[str, str] | None = None) -> None:
        attrs = dict(attributes or {})
        if self.fifo:
            attrs["FifoQueue"] = "true"
        self._url = self.api("create_queue", QueueName=self.queue_name, Attributes=attrs)["QueueUrl"]

    def send(self, items: Sequence[tuple[str, bytes, dict[str, Any]]]) -> list[str]:
        return aws.send_messages(
            items,
            lambda entries: self.api("send_message_batch", QueueUrl=self.url, Entries=entries),
            service="sqs",
            operation="SendMessageBatch",
            resource=self.arn,
            body_key="MessageBody",
            fifo=self.fifo,
        )


class SqsLog:
    def __init__(self, arn: str, settings: Settings | None = None, *, client: Any = None) -> None:
        self.queue = Queue(arn, settings, client)
        self.arn = arn
        self.name = arn
        self.fifo = self.queue.fifo

    @classmethod
    def from_target(cls, target: str, settings: Settings) -> SqsLog:
        return cls(target, settings)

    @classmethod
    def create(cls, target: str, settings: Settings) -> SqsLog:
        """Create the queue (idempotent); for ``fsmlog resources create`` and tests."""
        log = cls(target, settings)
        log.queue.create()
        return log

    def append(self, records: Sequence[OutRecord]) -> list[str]:
        return self.queue.send([(r.key, r.data, {}) for r in records])
