"""SNS as the log: each record is published as a message whose body is the base64 of its bytes.

SNS cannot be read back; subscribers (an SQS queue or a Lambda) consume it.
FIFO topics (name ends in ``.fifo``) get ``MessageGroupId`` = the correlation
id, so one machine's records stay in order. Positions are SNS message ids.

API calls: one PublishBatch per 10 records (or 256 KiB), plus one per resend of
refused entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import aws
from ..log import OutRecord
from ..settings import Settings


class SnsLog:
    def __init__(self, arn: str, settings: Settings | None = None, *, client: Any = None) -> None:
        parsed = aws.parse_arn(arn)
        aws.require(parsed, "sns", "", arn)
        self.arn = arn
        self.name = arn
        self.fifo = parsed.name.endswith(".fifo")
        self._api = aws.api("sns", arn, settings, client)

    @classmethod
    def from_target(cls, target: str, settings: Settings) -> SnsLog:
        return cls(target, settings)

    @classmethod
    def create(cls, target: str, settings: Settings) -> SnsLog:
        """Create the topic (idempotent); for ``fsmlog resources create`` and tests."""
        log = cls(target, settings)
        attributes = {"FifoTopic": "true"} if log.fifo else {}
        log._api("create_topic", Name=aws.parse_arn(target).name, Attributes=attributes)
        return log

    def append(self, records: Sequence[OutRecord]) -> list[str]:
        return aws.send_messages(
            [(r.key, r.data, {}) for r in records],
            lambda entries: self._api("publish_batch", TopicArn=self.arn, PublishBatchRequestEntries=entries),
            service="sns",
            operation="PublishBatch",
            resource=self.arn,
            body_key="Message",
            fifo=self.fifo,
        )
