"""DynamoDB environment store: large dicts kept by id.

Table: hash key ``id`` (S); attribute ``data`` (B; zlib-compressed with
``enc = "zlib"`` when large, items being capped at 400 KB).

API calls: ``put`` = one PutItem; ``get`` = one GetItem (strongly consistent).
"""

from __future__ import annotations

from typing import Any

from eventlog import aws


class DynamoDBEnvironment:
    KEYS = (("id", "HASH", "S"),)

    def __init__(self, arn: str, settings: Any = None, *, client: Any = None) -> None:
        parsed = aws.parse_arn(arn)
        aws.require(parsed, "dynamodb", "table", arn)
        self.arn = arn
        self.name = arn
        self.table = parsed.name
        self._api = aws.api("dynamodb", arn, settings, client)

    @classmethod
    def from_target(cls, target: str, settings: Any) -> DynamoDBEnvironment:
        return cls(target, settings)

    @classmethod
    def create(cls, target: str, settings: Any) -> DynamoDBEnvironment:
        """Create the table (if missing); for ``fsmlog resources create`` and tests."""
        store = cls(target, settings)
        aws.create_table(store._api, store.table, cls.KEYS)
        return store

    def put(self, env_id: str, data: bytes) -> None:
        self._api("put_item", TableName=self.table,
                  Item={"id": {"S": env_id}, **aws.pack_blob(data, f"environment {env_id!r}")})

    def get(self, env_id: str) -> bytes | None:
        item = self._api("get_item", TableName=self.table, Key={"id": {"S": env_id}},
                         ConsistentRead=True).get("Item")
        return aws.unpack_blob(item) if item else None
