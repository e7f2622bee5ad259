"""DynamoDB cache: leases with fence tokens and idempotency flags in one table, one call each.

Items (hash key ``key``, a string):

* lease ``L|<key>``: ``owner``, ``expires`` (epoch seconds) and ``token``, the fence
  counter. Release removes the owner but keeps the item, and lease items carry no
  TTL attribute, so the counter is never lost and tokens increase forever.
* flag ``F|<key>``: ``expires`` and ``ttl`` (whole epoch seconds, the table's
  TTL attribute, so DynamoDB deletes old flags by itself). Flags are checked
  against ``expires`` because TTL deletion can lag by days.

The prefixes keep a flag from ever overwriting a lease's counter.

The step gate's store (``handlers.cache.steps.StepCache``) costs one UpdateItem per record to
begin and one to end in the common case. It
keeps the machine's flags on its lease item ``L|lease:<cid>`` — the same item
and fence counter ``acquire("lease:<cid>")`` uses, so mixing the two paths
never hands out a smaller token:

* ``done`` is the machine's done high-water mark, the greatest ``steps``
  marked done, alive while ``done_until`` (epoch seconds) has not passed. A
  machine's steps only grow (each record is the next one's predecessor), so
  once step n is done every record with ``steps <= n`` is a redelivery or a
  duplicate: one number covers them all. DynamoDB expressions have no
  ``max``, so the mark is raised under a condition (``done < steps``); the
  rare end whose mark is already as high (a duplicate) takes a second call.
  An expired mark may be replaced by a lower one (the dedupe window is over,
  as for an expired flag).
* ``aborted_until``: the machine was aborted, until that time.

These live apart from the ``F|done:<cid>:<steps>`` / ``F|abort:<cid>`` flags of the
composed path; ``begin_step`` does not see those (the engine uses one path per cache).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eventlog.errors import BackendError
from eventlog.settings import Settings

from .steps import Ending, StepKey, StepView

TTL_ATTRIBUTE = "ttl"
POOL = 128  # calls of one batch in flight at once: a batch of up to this many records is one round trip
_END_TRIES = 4  # refused end_step updates (each one means another writer changed the item) before giving up


def _alive(item: dict[str, Any], attribute: str, now: float) -> bool:
    return attribute in item and float(item[attribute]["N"]) >= now


def _covers(item: dict[str, Any], steps: int, now: float) -> bool:
    """Whether the item's unexpired done mark says step ``steps`` is done."""
    return "done" in item and int(item["done"]["N"]) >= steps and _alive(item, "done_until", now)


class DynamoDBCache:
    """Leases and flags in one DynamoDB table named by ``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME``."""

    # the table fsmlog.resources creates: (name, key type, attribute type), and the TTL attribute
    KEYS = (("key", "HASH", "S"),)
    TTL_ATTRIBUTE = TTL_ATTRIBUTE

    def __init__(self, arn: str, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        from eventlog.aws import client, parse_arn, require
        from eventlog.dynamodb_wire import item_client

        parsed = parse_arn(arn, "CACHE_SOURCE")
        require(parsed, "dynamodb", "table", arn)
        self.name = arn
        self.arn = arn
        self.table = parsed.name
        self._clock = clock
        self._boto = client("dynamodb", arn, settings)
        self._client = item_client(self._boto)  # the step path's calls, without boto3's per-call CPU
        self._pool: ThreadPoolExecutor | None = None

    def _each(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn`` over a batch's items, concurrently: a batch costs one round trip of latency, not one
        per record (DynamoDB has no conditional batch write short of a transaction, which costs two
        write units per item)."""
        if len(items) <= 1:
            return [fn(i) for i in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=POOL, thread_name_prefix="fsmlog-dynamodb")
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pool"] = None
        return state

    @classmethod
    def from_target(cls, target: str, settings: Settings) -> DynamoDBCache:
        return cls(target, settings)

    @classmethod
    def create(cls, target: str, settings: Settings) -> DynamoDBCache:
        """Create the table with TTL on ``ttl`` (if missing); for tests. Deployments use fsmlog.resources."""
        from eventlog.aws import api, call, create_table

        cache = cls(target, settings)
        create_table(api("dynamodb", target, settings, cache._boto), cache.table, cls.KEYS)
        ttl = call(cache._boto.describe_time_to_live, resource=target, TableName=cache.table)
        if ttl.get("TimeToLiveDescription", {}).get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            call(cache._boto.update_time_to_live, resource=target, TableName=cache.table,
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

    def _update_or_old(self, **params: Any) -> tuple[bool, dict[str, Any]]:
        """One conditional UpdateItem: ``(True, new attributes)``, or ``(False, the item as it was)``
        when the condition failed (the old item comes with the refusal, at no extra call)."""
        from eventlog.aws import call

        refused = self._client.exceptions.ConditionalCheckFailedException

        def attempt(**kw: Any) -> tuple[bool, dict[str, Any]]:
            try:
                return True, self._client.update_item(**kw).get("Attributes", {})
            except refused as exc:
                return False, exc.response.get("Item", {})

        return call(attempt, resource=self.arn, service="dynamodb", operation="update_item",
                    TableName=self.table, ReturnValuesOnConditionCheckFailure="ALL_OLD", **params)

    def _take(self, key: str, owner: str, ttl_s: float, returned: str, floor: int = 0) -> dict[str, Any] | None:
        """The lease update ``acquire`` and ``begin_steps`` share (one item, one fence counter).

        The token is ``max(counter + 1, floor)``; expressions have no ``max``, so the first call
        guesses from the common case (a new attempt: the counter is below its floor) and a refusal,
        which returns the item as it was, picks the other form."""
        now = self._clock()
        floor = max(1, int(floor))
        free = "(attribute_not_exists(#o) OR #e < :now OR #o = :me)"
        names = {"#t": "token", "#o": "owner", "#e": "expires"}
        values = {":me": {"S": owner}, ":exp": {"N": repr(now + ttl_s)}, ":now": {"N": repr(now)},
                  ":floor": {"N": str(floor)}, ":one": {"N": "1"}}
        forms = {
            "floor": ("SET #t = :floor, #o = :me, #e = :exp", f"(attribute_not_exists(#t) OR #t < :floor) AND {free}",
                      (":me", ":exp", ":now", ":floor")),
            "next": ("ADD #t :one SET #o = :me, #e = :exp", f"#t >= :floor AND {free}",
                     (":me", ":exp", ":now", ":floor", ":one")),
        }
        form = "floor"
        for _ in range(_END_TRIES):
            update, condition, used = forms[form]
            ok, item = self._update_or_old(
                Key={"key": {"S": f"L|{key}"}}, UpdateExpression=update, ConditionExpression=condition,
                ExpressionAttributeNames=names, ExpressionAttributeValues={v: values[v] for v in used},
                ReturnValues=returned,
            )
            if ok:
                return item
            holder = item.get("owner", {}).get("S")
            if holder is not None and holder != owner and float(item.get("expires", {}).get("N", "0")) >= now:
                return None
            form = "next" if int(item.get("token", {}).get("N", "0")) >= floor else "floor"
        raise BackendError(f"dynamodb {self.arn}: taking the lease {key!r} kept racing other writers")

    def acquire(self, key: str, owner: str, ttl_s: float, floor: int = 0) -> int | None:
        item = self._take(key, owner, ttl_s, "UPDATED_NEW", floor)
        return None if item is None else int(item["token"]["N"])

    def release(self, key: str, owner: str, token: int) -> None:
        self._conditional(
            "update_item",
            Key={"key": {"S": f"L|{key}"}},
            UpdateExpression="REMOVE #o, #e",
            ConditionExpression="#o = :me AND #t = :tok",
            ExpressionAttributeNames={"#t": "token", "#o": "owner", "#e": "expires"},
            ExpressionAttributeValues={":me": {"S": owner}, ":tok": {"N": str(int(token))}},
        )

    def extend(self, key: str, owner: str, token: int, ttl_s: float) -> bool:
        now = self._clock()
        return self._conditional(
            "update_item",
            Key={"key": {"S": f"L|{key}"}},
            UpdateExpression="SET #o = :me, #e = :exp",
            # no acquisition came after ours (the counter is our token), even if the lease ran out
            ConditionExpression="#t = :tok AND (attribute_not_exists(#o) OR #o = :me)",
            ExpressionAttributeNames={"#t": "token", "#o": "owner", "#e": "expires"},
            ExpressionAttributeValues={":me": {"S": owner}, ":tok": {"N": str(int(token))},
                                       ":exp": {"N": repr(now + ttl_s)}},
        ) is not None

    # ---------------------------------------------------------------- the step gate's store

    @staticmethod
    def _view(token: int | None, item: dict[str, Any], now: float) -> StepView:
        mark = int(item["done"]["N"]) if "done" in item and _alive(item, "done_until", now) else None
        return StepView(token, mark, _alive(item, "aborted_until", now))

    def begin_steps(self, items: Sequence[StepKey], owner: str, ttl_s: float) -> list[StepView]:
        """Take each ``lease:<cid>`` as ``acquire`` does and read its mark and abort flag: one UpdateItem
        per record in the common case."""
        def begin(key: StepKey) -> StepView:
            item = self._take(f"lease:{key.cid}", owner, ttl_s, "ALL_NEW", key.floor)
            return (StepView(None, None, False) if item is None
                    else self._view(int(item["token"]["N"]), item, self._clock()))

        return self._each(begin, items)

    def peek_steps(self, items: Sequence[StepKey]) -> list[StepView]:
        from eventlog.aws import call

        def peek(key: StepKey) -> StepView:
            response = call(self._client.get_item, resource=self.arn, TableName=self.table,
                            Key={"key": {"S": f"L|lease:{key.cid}"}}, ConsistentRead=True)
            return self._view(None, response.get("Item", {}), self._clock())

        return self._each(peek, items)

    def check_leases(self, items: Sequence[tuple[str, int]], owner: str, ttl_s: float) -> list[bool]:
        """The fence counters of a batch's machines with consistent BatchGetItem reads (100 keys a call,
        all in flight together): read units, not a write per lease."""
        from eventlog.aws import call

        keys = list(dict.fromkeys(cid for cid, _ in items))
        tokens: dict[str, int] = {}

        def read(chunk: list[str]) -> dict[str, int]:
            found: dict[str, int] = {}
            request = {self.table: {"Keys": [{"key": {"S": f"L|lease:{cid}"}} for cid in chunk],
                                    "ConsistentRead": True, "ProjectionExpression": "#k, #t",
                                    "ExpressionAttributeNames": {"#k": "key", "#t": "token"}}}
            for _ in range(8):
                response = call(self._client.batch_get_item, resource=self.arn, RequestItems=request)
                for item in response.get("Responses", {}).get(self.table, []):
                    if "token" in item:
                        found[item["key"]["S"][len("L|lease:"):]] = int(item["token"]["N"])
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    return found
            raise BackendError(f"dynamodb {self.arn}: lease check left keys unprocessed", service="dynamodb",
                               operation="BatchGetItem", resource=self.arn)

        for found in self._each(read, [keys[i:i + 100] for i in range(0, len(keys), 100)]):
            tokens.update(found)
        return [tokens.get(cid) == int(token) for cid, token in items]

    def renew_leases(self, items: Sequence[tuple[str, int]], owner: str, ttl_s: float) -> list[bool]:
        return self._each(lambda item: self.extend(f"lease:{item[0]}", owner, item[1], ttl_s), items)

    def end_steps(self, items: Sequence[Ending], owner: str, dedupe_s: float) -> None:
        self._each(lambda e: self._end_step(e.cid, e.handled_upto(), owner, e.token, e.mark is not None, dedupe_s),
                   items)

    def _end_step(self, cid: str, steps: int, owner: str, token: int | None, done: bool, dedupe_s: float) -> None:
        """Raise the done mark to ``steps`` (when done) and release the lease if ``(owner, token)`` still
        hold it: one UpdateItem in the common case (we hold it and the step is new).

        A stale holder's release is ignored but its mark still counts: its step's
        next record was appended, so the step is done whoever holds the lease now.
        """
        key = f"lease:{cid}"
        if not done:
            if token is not None:
                self.release(key, owner, token)
            return
        now = self._clock()
        tok = -1 if token is None else int(token)
        values = {":me": {"S": owner}, ":tok": {"N": str(tok)}, ":s": {"N": str(int(steps))},
                  ":until": {"N": repr(now + dedupe_s)}, ":now": {"N": repr(now)}}
        names = {"#o": "owner", "#e": "expires", "#t": "token", "#d": "done", "#du": "done_until"}
        held = "#o = :me AND #t = :tok"
        lower = "(attribute_not_exists(#d) OR #d < :s OR #du < :now)"
        covered = "#d >= :s AND #du >= :now"
        # first guess the common case; a refusal returns the item as it was, which picks the next try
        old: dict[str, Any] = {"owner": {"S": owner}, "token": {"N": str(tok)}} if token is not None else {}
        for _ in range(_END_TRIES):
            holds = old.get("owner", {}).get("S") == owner and int(old.get("token", {}).get("N", -1)) == tok
            raise_mark = not _covers(old, steps, now)
            if holds and raise_mark:
                update, condition = "SET #d = :s, #du = :until REMOVE #o, #e", f"{held} AND {lower}"
            elif holds:  # a duplicate's end: the mark already covers it; refresh its window
                update, condition = "SET #du = :until REMOVE #o, #e", f"{held} AND {covered}"
            elif raise_mark:  # a stale holder (or a mark only): record the step, leave the lease alone
                update, condition = "SET #d = :s, #du = :until", lower
            else:
                return
            used = set(re.findall(r"[#:]\w+", f"{update} {condition}"))  # DynamoDB refuses unused ones
            ok, old = self._update_or_old(Key={"key": {"S": f"L|{key}"}}, UpdateExpression=update,
                                          ConditionExpression=condition,
                                          ExpressionAttributeNames={n: names[n] for n in names if n in used},
                                          ExpressionAttributeValues={v: values[v] for v in values if v in used})
            if ok:
                return
        raise BackendError(f"dynamodb {self.arn}: end of step {steps} of {cid!r} kept racing other writers")

    def abort_machine(self, cid: str, dedupe_s: float) -> None:
        """Flag the machine aborted for ``dedupe_s``: one UpdateItem on its lease item."""
        from eventlog.aws import call

        call(self._client.update_item, resource=self.arn, TableName=self.table,
             Key={"key": {"S": f"L|lease:{cid}"}}, UpdateExpression="SET #a = :until",
             ExpressionAttributeNames={"#a": "aborted_until"},
             ExpressionAttributeValues={":until": {"N": repr(self._clock() + dedupe_s)}})

    # ---------------------------------------------------------------- flags

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
