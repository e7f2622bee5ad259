"""DynamoDB checkpoints: one item per machine, written only over an older version.

Table: hash key ``cid`` (S); attributes ``version`` (N), ``data`` (B; zlib-compressed
with ``enc = "zlib"`` when large, as items are capped at 400 KB).

API calls: ``save`` = one PutItem (conditional); ``save_many`` = one PutItem per snapshot, in flight
together; ``load`` = one GetItem (strongly consistent).
"""

from __future__ import annotations

from eventlog import aws
from eventlog.errors import BackendError


class DynamoDBCheckpoints(aws.DynamoDBTable):
    KEYS = (("cid", "HASH", "S"),)

    def save(self, correlation_id: str, version: int, data: bytes) -> bool:
        item = {"cid": {"S": correlation_id}, "version": {"N": str(int(version))},
                **aws.pack_blob(data, f"snapshot of {correlation_id}")}
        try:
            self._api(
                "put_item",
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(cid) OR #v < :v",
                ExpressionAttributeNames={"#v": "version"},
                ExpressionAttributeValues={":v": {"N": str(int(version))}},
            )
        except BackendError as exc:
            if exc.code == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def save_many(self, items: list[tuple[str, int, bytes]]) -> list[bool]:
        """A batch's snapshots as concurrent conditional PutItems: one round trip of latency. (BatchWriteItem
        takes no condition, and a transaction costs two write units per item.)"""
        if len(items) <= 1:
            return [self.save(*i) for i in items]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(128, len(items)), thread_name_prefix="fsmlog-snapshots") as pool:
            return list(pool.map(lambda i: self.save(*i), items))

    def load(self, correlation_id: str) -> bytes | None:
        item = self._api(
            "get_item", TableName=self.table, Key={"cid": {"S": correlation_id}}, ConsistentRead=True
        ).get("Item")
        return aws.unpack_blob(item) if item else None
