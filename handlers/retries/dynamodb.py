"""DynamoDB retries: failed steps wait as items until their due time; timers claim them conditionally.

Table: hash key ``id`` (S); attributes ``due`` (N, epoch seconds), ``shard``
(N, ``0..SHARDS-1``, a small bucket so the index has a few partitions instead of
one hot one), ``claimed_until`` (N), ``data`` (B) and a global secondary index
``due-index`` (hash ``shard``, range ``due``, all attributes projected).

``id`` is ``"{key}:{digest of data}"``, so scheduling the same retry record twice
(a worker redoing a batch) stores it once.

``due(now)`` queries each shard for ``due <= now`` (the index is eventually
consistent, so it only nominates), then claims each candidate with a
conditional UpdateItem ``claimed_until < :now``: of two timers racing for an
item exactly one wins. A claim lasts ``claim_seconds``; an item not ``done`` by
then is offered again (at-least-once).

API calls: ``schedule`` = one BatchWriteItem per 25; ``due`` = one Query per
shard page visited + one UpdateItem per candidate; ``done`` = one
BatchWriteItem per 25.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from collections.abc import Sequence
from typing import Any

from eventlog import aws
from eventlog.errors import BackendError
from eventlog.settings import Settings

from . import DueRetry, ScheduledRetry

SHARDS = 4
INDEX = "due-index"


class DynamoDBRetries(aws.DynamoDBTable):
    KEYS = (("id", "HASH", "S"),)
    INDEXES = ((INDEX, (("shard", "HASH", "N"), ("due", "RANGE", "N"))),)

    def __init__(self, arn: str, settings: Settings | None = None, *, client: Any = None,
                 claim_seconds: float | None = None) -> None:
        super().__init__(arn, settings, client=client)
        if claim_seconds is None:
            claim_seconds = float(settings.LEASE_SECONDS) if settings is not None else 60.0
        self.claim_seconds = claim_seconds

    @staticmethod
    def item_id(retry: ScheduledRetry) -> str:
        return f"{retry.key}:{hashlib.sha256(retry.data).hexdigest()[:32]}"

    def schedule(self, retries: Sequence[ScheduledRetry]) -> None:
        requests = []
        seen: set[str] = set()
        for r in retries:
            rid = self.item_id(r)
            if rid in seen:  # one batch may not write the same key twice
                continue
            seen.add(rid)
            item = {
                "id": {"S": rid},
                "due": {"N": repr(float(r.due))},
                "shard": {"N": str(zlib.crc32(rid.encode()) % SHARDS)},
                "claimed_until": {"N": "0"},
                **aws.pack_blob(r.data, f"retry record of {r.key}"),
            }
            requests.append({"PutRequest": {"Item": item}})
        aws.batch_write(self._api, self.table, requests)

    def _candidates(self, shard: int, now: float, limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if limit <= 0:
            return out
        for page in self._api.pages(
            "query",
            page_size=max(limit, 10),
            TableName=self.table,
            IndexName=INDEX,
            KeyConditionExpression="#s = :s AND #d <= :now",
            FilterExpression="claimed_until < :now",
            ExpressionAttributeNames={"#s": "shard", "#d": "due"},
            ExpressionAttributeValues={":s": {"N": str(shard)}, ":now": {"N": repr(float(now))}},
        ):
            out.extend(page.get("Items", []))
            if len(out) >= limit:
                break
        return out[:limit]

    def _claim(self, item_id: str, now: float) -> dict[str, Any] | None:
        try:
            response = self._api(
                "update_item",
                TableName=self.table,
                Key={"id": {"S": item_id}},
                UpdateExpression="SET claimed_until = :until",
                ConditionExpression="attribute_exists(id) AND claimed_until < :now AND #d <= :now",
                ExpressionAttributeNames={"#d": "due"},
                ExpressionAttributeValues={
                    ":now": {"N": repr(float(now))},
                    ":until": {"N": repr(float(now) + self.claim_seconds)},
                },
                ReturnValues="ALL_NEW",
            )
        except BackendError as exc:
            if exc.code == "ConditionalCheckFailedException":
                return None  # another timer has it, or it is done
            raise
        return response.get("Attributes")

    def due(self, now: float, limit: int) -> list[DueRetry]:
        out: list[DueRetry] = []
        first = random.randrange(SHARDS)  # timers start at different shards, so they collide less
        for n in range(SHARDS):
            if len(out) >= limit:
                break
            for candidate in self._candidates((first + n) % SHARDS, now, limit - len(out)):
                item = self._claim(candidate["id"]["S"], now)
                if item is not None:
                    out.append(DueRetry(item["id"]["S"], aws.unpack_blob(item), float(item.get("due", {}).get("N", 0) or 0)))
        return out

    def done(self, handles: Sequence[str]) -> None:
        unique = list(dict.fromkeys(handles))
        aws.batch_write(self._api, self.table, [{"DeleteRequest": {"Key": {"id": {"S": h}}}} for h in unique])
