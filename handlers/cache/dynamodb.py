"""DynamoDB cache: leases with fence tokens and idempotency flags in one table, one call each.

Items (hash key ``key``, a string):

* lease ``L|<key>``: ``owner``, ``expires`` (epoch seconds) and ``token``, the fence
  counter. Release removes the owner but keeps the item, and lease items carry no
  TTL attribute, so the counter is never lost and tokens increase forever.
* flag ``F|<key>``: ``expires`` and ``ttl`` (whole epoch seconds, the table's
  TTL attribute, so DynamoDB deletes old flags by itself). Flags are checked
  against ``expires`` because TTL deletion can lag by days.

The prefixes keep a flag from ever overwriting a lease's counter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from eventlog.settings import Settings

TTL_ATTRIBUTE = "ttl"


class DynamoDBCache:
    """Leases and flags in one DynamoDB table named by ``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME``."""

    # the table fsmlog.resources creates: (name, key type, attribute type), and the TTL attribute
    KEYS = (("key", "HASH", "S"),)
    TTL_ATTRIBUTE = TTL_ATTRIBUTE

    def __init__(self, arn: str, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        from eventlog.aws import client, parse_arn, require

        parsed = parse_arn(arn, "CACHE_SOURCE")
        require(parsed, "dynamodb", "table", arn)
        self.name = arn
        self.arn = arn
        self.table = parsed.name
        self._clock = clock
        self._client = client("dynamodb", arn, settings)

    @classmethod
    def from_target(cls, target: str, settings: Settings) -> DynamoDBCache:
        return cls(target, settings)

    @classmethod
    def create(cls, target: str, settings: Settings) -> DynamoDBCache:
        """Create the table with TTL on ``ttl`` (if missing); for tests. Deployments use fsmlog.resources."""
        from eventlog.aws import api, call, create_table

        cache = cls(target, settings)
        create_table(api("dynamodb", target, settings, cache._client), cache.table, cls.KEYS)
        ttl = call(cache._client.describe_time_to_live, resource=target, TableName=cache.table)
        if ttl.get("TimeToLiveDescription", {}).get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            call(cache._client.update_time_to_live, resource=target, TableName=cache.table,
                 TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE})
        return cache

    def _conditional(self, operation: str, **params: Any) -> dict[str, Any] | None:
        """One call that may fail its condition: ``None`` then, throttling retried by ``call``."""
        from eventlog.aws import call

        fn = getattr(self._client, operation)
        refused = self._client.exceptions.ConditionalCheckFailedException

        def attempt(**kw: Any) -> dict[str, Any] | None:
            try:
                return fn(**kw)
            except refused:
                return None

        return call(attempt, resource=self.arn, service="dynamodb", operation=operation,
                    TableName=self.table, **params)

    def acquire(self, key: str, owner: str, ttl_s: float) -> int | None:
        now = self._clock()
        response = self._conditional(
            "update_item",
            Key={"key": {"S": f"L|{key}"}},
            UpdateExpression="ADD #t :one SET #o = :me, #e = :exp",
            ConditionExpression="attribute_not_exists(#o) OR #e < :now OR #o = :me",
            ExpressionAttributeNames={"#t": "token", "#o": "owner", "#e": "expires"},
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":me": {"S": owner},
                ":exp": {"N": repr(now + ttl_s)},
                ":now": {"N": repr(now)},
            },
            ReturnValues="UPDATED_NEW",
        )
        if response is None:
            return None
        return int(response["Attributes"]["token"]["N"])

    def release(self, key: str, owner: str, token: int) -> None:
        self._conditional(
            "update_item",
            Key={"key": {"S": f"L|{key}"}},
            UpdateExpression="REMOVE #o, #e",
            ConditionExpression="#o = :me AND #t = :tok",
            ExpressionAttributeNames={"#t": "token", "#o": "owner", "#e": "expires"},
            ExpressionAttributeValues={":me": {"S": owner}, ":tok": {"N": str(int(token))}},
        )

    def mark(self, key: str, ttl_s: float) -> bool:
        now = self._clock()
        expires = now + ttl_s
        response = self._conditional(
            "put_item",
            Item={
                "key": {"S": f"F|{key}"},
                "expires": {"N": repr(expires)},
                TTL_ATTRIBUTE: {"N": str(int(expires) + 1)},
            },
            ConditionExpression="attribute_not_exists(#k) OR #e < :now",
            ExpressionAttributeNames={"#k": "key", "#e": "expires"},
            ExpressionAttributeValues={":now": {"N": repr(now)}},
        )
        return response is not None

    def marked(self, key: str) -> bool:
        from eventlog.aws import call

        response = call(self._client.get_item, resource=self.arn, TableName=self.table,
                        Key={"key": {"S": f"F|{key}"}}, ConsistentRead=True,
                        ProjectionExpression="#e", ExpressionAttributeNames={"#e": "expires"})
        item = response.get("Item")
        return item is not None and float(item["expires"]["N"]) >= self._clock()
