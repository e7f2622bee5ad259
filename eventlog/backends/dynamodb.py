"""DynamoDB as the log: one item per record in a table with a stream (NEW_IMAGE) that triggers the workers.

Table: hash key ``cid`` (S, the partition key = correlation id), range key
``seq`` (N), attribute ``data`` (B, the record exactly as encoded). Positions
are ``"{cid}:{seq}"``.

``seq`` is a time-ordered unique number, not the record's steps/retries: the
log must store any bytes (and the same step twice, e.g. a retry written by two
workers) without one item overwriting another. It is the writer's microsecond
clock, forced strictly increasing within the process, times 10**6 plus six
random digits so that two processes writing the same machine in the same
microsecond still get distinct keys. Order across processes is as good as
their clocks; the fold does not depend on it.

API calls: one BatchWriteItem per 25 records, plus one per resend of
UnprocessedItems.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from .. import aws
from ..errors import RecordTooLarge
from ..log import OutRecord

ITEM_OVERHEAD = 100  # attribute names, the number and DynamoDB's per-item bytes

_lock = threading.Lock()
_last_tick = 0


def next_seq() -> int:
    """A unique, per-process strictly increasing sequence number (see module docstring)."""
    global _last_tick
    with _lock:
        tick = max(time.time_ns() // 1000, _last_tick + 1)
        _last_tick = tick
    return tick * 1_000_000 + random.randrange(1_000_000)


class DynamoDBLog(aws.DynamoDBTable):
    KEYS = (("cid", "HASH", "S"), ("seq", "RANGE", "N"))
    STREAM = True  # the table's stream is what triggers the workers

    def append(self, records: Sequence[OutRecord]) -> list[str]:
        for r in records:
            size = len(r.data) + len(r.key.encode()) + ITEM_OVERHEAD
            if not r.key:
                raise RecordTooLarge(f"record with an empty key cannot be stored in {self.arn}")
            if size > aws.DYNAMODB_ITEM_BYTES:
                raise RecordTooLarge(
                    f"record for key {r.key!r} is {size} bytes as an item, over DynamoDB's "
                    f"{aws.DYNAMODB_ITEM_BYTES}-byte item limit (table {self.arn})"
                )
        positions: list[str] = []
        requests: list[dict[str, Any]] = []
        for r in records:
            seq = str(next_seq())
            positions.append(f"{r.key}:{seq}")
            requests.append({"PutRequest": {"Item": {"cid": {"S": r.key}, "seq": {"N": seq}, "data": {"B": r.data}}}})
        aws.batch_write(self._api, self.table, requests)
        return positions
