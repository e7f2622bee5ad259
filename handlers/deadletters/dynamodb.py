"""DynamoDB dead letters: poison records parked with reason, source and position.

Table: hash key ``id`` (S); attributes ``reason`` (S), ``source`` (S),
``position`` (S), ``time`` (N), ``data`` (B, the raw record; zlib-compressed
with ``enc = "zlib"`` when large, exactly restored by ``get``). Ids start with
the parking time (zero-padded microseconds) so they sort by time; ``list`` gives newest first.

API calls: ``park`` = one PutItem; ``list`` = one Scan per page of at most
``limit`` items (sorted newest first by the client; a list of a big table is a
sample, which is what an operator's first look needs); ``get`` = one GetItem;
``remove`` = one DeleteItem.
"""

from __future__ import annotations

from typing import Any

from eventlog import aws
from eventlog.errors import BackendError

from . import DeadLetter, letter_id


class DynamoDBDeadLetters(aws.DynamoDBTable):
    KEYS = (("id", "HASH", "S"),)

    def park(self, reason: str, source: str, position: str, data: bytes, time: float) -> str:
        lid = letter_id(source, position, data)
        item = {
            "id": {"S": lid},
            "reason": {"S": reason},
            "source": {"S": source},
            "position": {"S": position},
            "time": {"N": repr(float(time))},
            **aws.pack_blob(bytes(data), f"dead letter from {source} at {position}"),
        }
        try:  # the same record parked again (its batch redelivered) keeps the first parking
            self._api("put_item", TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(id)")
        except BackendError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise
        return lid

    @staticmethod
    def _letter(item: dict[str, Any]) -> DeadLetter:
        def text(name: str) -> str:
            return item.get(name, {}).get("S", "")

        return DeadLetter(item["id"]["S"], text("reason"), text("source"), text("position"),
                          aws.unpack_blob(item), float(item["time"]["N"]))

    def list(self, limit: int = 100) -> list[DeadLetter]:
        out: list[DeadLetter] = []
        if limit <= 0:
            return out
        for page in self._api.pages("scan", page_size=max(1, limit), TableName=self.table):
            out.extend(self._letter(i) for i in page.get("Items", []))
            if len(out) >= limit:
                break
        return sorted(out, key=lambda d: (d.time, d.id), reverse=True)[:limit]

    def get(self, letter_id: str) -> DeadLetter | None:
        item = self._api("get_item", TableName=self.table, Key={"id": {"S": letter_id}},
                         ConsistentRead=True).get("Item")
        return self._letter(item) if item else None

    def remove(self, letter_id: str) -> None:
        self._api("delete_item", TableName=self.table, Key={"id": {"S": letter_id}})
