"""DynamoDB environment store: large dicts kept by id.

Table: hash key ``id`` (S); attribute ``data`` (B; zlib-compressed with
``enc = "zlib"`` when large, items being capped at 400 KB).

API calls: ``put`` = one PutItem; ``get`` = one GetItem (strongly consistent).
"""

from __future__ import annotations

from eventlog import aws


class DynamoDBEnvironment(aws.DynamoDBTable):
    KEYS = (("id", "HASH", "S"),)

    def put(self, env_id: str, data: bytes) -> None:
        self._api("put_item", TableName=self.table,
                  Item={"id": {"S": env_id}, **aws.pack_blob(data, f"environment {env_id!r}")})

    def get(self, env_id: str) -> bytes | None:
        item = self._api("get_item", TableName=self.table, Key={"id": {"S": env_id}},
                         ConsistentRead=True).get("Item")
        return aws.unpack_blob(item) if item else None
