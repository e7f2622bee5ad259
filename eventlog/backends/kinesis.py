"""Kinesis Data Streams: the preferred log. Appends with PutRecords, reads with GetRecords.

Positions are ``"{ShardId}:{SequenceNumber}"``. Reading the whole stream walks
the shards in shard-id order (parents before their children after a reshard)
and each shard oldest first, so ``read(after)`` has one total order: every
record of an earlier shard, then the later shard's records after ``after``.
That order suits replay and rebuilds, which read to the end; a tail that must
see new records of every shard at once belongs to the Lambda trigger or the KCL.

API calls: ``append`` = one PutRecords per 500 records / 5 MiB, plus one per
resend of refused entries. ``read`` = one ListShards, then per shard visited
one GetShardIterator and one GetRecords per page, until the page's
``MillisBehindLatest`` says the iterator is at the tip (a sparse shard answers
empty pages while it is behind; those never end a read) or the limit is met. ``read_key`` visits only the
shards whose hash-key range holds the key's MD5.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from .. import aws
from ..errors import BackendError, RecordTooLarge, SettingsError
from ..log import LogRecord, OutRecord
from ..settings import Settings

MAX_RECORD_BYTES = 1024 * 1024  # data + partition key
MAX_BATCH_BYTES = 5 * 1024 * 1024
MAX_BATCH_RECORDS = 500
MAX_KEY_CHARS = 256
PAGE = 10_000  # GetRecords' own maximum


def at_tip(page: dict[str, Any]) -> bool:
    """Whether a GetRecords answer says its next iterator is at the shard's tip (``MillisBehindLatest``
    is 0). A sparse shard answers empty pages while behind; only the tip ends a read. A service that
    leaves the field out is taken to be at the tip (the read ends on a short page)."""
    behind = page.get("MillisBehindLatest")
    return behind is None or int(behind) <= 0


def hash_key(key: str) -> int:
    """The 128-bit hash Kinesis routes a partition key by."""
    return int.from_bytes(hashlib.md5(key.encode()).digest(), "big")


class KinesisLog:
    def __init__(self, arn: str, settings: Settings | None = None, *, client: Any = None) -> None:
        parsed = aws.parse_arn(arn)
        aws.require(parsed, "kinesis", "stream", arn)
        self.arn = arn
        self.name = arn
        self.stream = parsed.name
        self._api = aws.api("kinesis", arn, settings, client)

    @classmethod
    def from_target(cls, target: str, settings: Settings) -> KinesisLog:
        return cls(target, settings)

    @classmethod
    def create(cls, target: str, settings: Settings, shards: int = 1) -> KinesisLog:
        """Create the stream (if missing) and wait (boto3's ``stream_exists`` waiter) until it is ACTIVE;
        for ``fsmlog resources create`` and tests."""
        log = cls(target, settings)
        try:
            log._api("create_stream", StreamName=log.stream, ShardCount=shards)
        except BackendError as exc:
            if exc.code != "ResourceInUseException":  # in use: it exists already (or is being created)
                raise
        log._api.wait("stream_exists", StreamName=log.stream)
        return log

    # --- append --------------------------------------------------------------------------------------

    def append(self, records: Sequence[OutRecord]) -> list[str]:
        for r in records:
            size = len(r.data) + len(r.key.encode())
            if not r.key or len(r.key) > MAX_KEY_CHARS:
                raise RecordTooLarge(
                    f"partition key {r.key[:40]!r}... must be 1 to {MAX_KEY_CHARS} characters for Kinesis "
                    f"(stream {self.arn})"
                )
            if size > MAX_RECORD_BYTES:
                raise RecordTooLarge(
                    f"record for key {r.key!r} is {size} bytes (data + key), over Kinesis' "
                    f"{MAX_RECORD_BYTES}-byte limit (stream {self.arn})"
                )
        positions: list[str] = [""] * len(records)
        indexed = list(enumerate(records))
        for group in aws.chunks(indexed, MAX_BATCH_RECORDS, lambda e: len(e[1].data) + len(e[1].key.encode()),
                                MAX_BATCH_BYTES):
            aws.send_entries(group, lambda entries: self._put(entries, positions), service="kinesis",
                             operation="PutRecords", resource=self.arn)
        return positions

    def _put(self, entries: list[tuple[int, OutRecord]], positions: list[str]) -> dict[int, tuple[str, str, bool]]:
        response = self._api(
            "put_records",
            StreamName=self.stream,
            Records=[{"Data": r.data, "PartitionKey": r.key} for _, r in entries],
        )
        failed: dict[int, tuple[str, str, bool]] = {}
        results = response.get("Records", [])
        if len(results) != len(entries):
            raise aws.ServiceUnavailable(
                f"kinesis PutRecords on {self.arn} answered {len(results)} results for {len(entries)} records",
                service="kinesis", operation="PutRecords", resource=self.arn,
            )
        for i, (result, (index, _)) in enumerate(zip(results, entries, strict=True)):
            if result.get("ErrorCode"):
                failed[i] = (result["ErrorCode"], result.get("ErrorMessage", ""), False)
            else:
                positions[index] = f"{result['ShardId']}:{result['SequenceNumber']}"
        return failed

    # --- read ----------------------------------------------------------------------------------------

    def shard_ranges(self) -> list[tuple[str, int, int]]:
        """``(shard_id, lowest hash key, highest hash key)`` of every shard kept, in shard-id order."""
        out: list[tuple[str, int, int]] = []
        for page in aws.pages(self._api, "kinesis", "list_shards", StreamName=self.stream):
            for shard in page.get("Shards", []):
                r = shard["HashKeyRange"]
                out.append((shard["ShardId"], int(r["StartingHashKey"]), int(r["EndingHashKey"])))
        out.sort()
        return out

    def shards(self) -> list[str]:
        return [s for s, _, _ in self.shard_ranges()]

    def read_shard(self, shard_id: str, after_sequence: str | None = None, limit: int = PAGE) -> list[LogRecord]:
        """Up to ``limit`` records of one shard after ``after_sequence`` (``None``: from the oldest kept)."""
        if limit <= 0:
            return []
        params: dict[str, Any] = {"StreamName": self.stream, "ShardId": shard_id}
        if after_sequence:
            params.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after_sequence)
        else:
            params["ShardIteratorType"] = "TRIM_HORIZON"
        iterator = self._api("get_shard_iterator", **params).get("ShardIterator")
        out: list[LogRecord] = []
        while iterator and len(out) < limit:
            want = min(PAGE, limit - len(out))
            page = self._api("get_records", ShardIterator=iterator, Limit=want)
            got = page.get("Records", [])
            for rec in got:
                out.append(LogRecord(f"{shard_id}:{rec['SequenceNumber']}", rec["PartitionKey"], bytes(rec["Data"])))
            iterator = page.get("NextShardIterator")  # None: a closed shard read to its end
            if at_tip(page) and len(got) < want:
                break  # the iterator reached the tip: nothing more to fetch now
            # behind the tip: an empty page only means this stretch of the shard holds no record
        return out

    def read(self, after: str | None, limit: int) -> list[LogRecord]:
        return self._read(self.shards(), after, limit)

    def read_key(self, key: str, after: str | None = None) -> list[LogRecord]:
        h = hash_key(key)
        shards = [s for s, lo, hi in self.shard_ranges() if lo <= h <= hi]
        out: list[LogRecord] = []
        cursor = after
        while True:
            page = self._read(shards, cursor, PAGE)
            out.extend(r for r in page if r.key == key)
            if len(page) < PAGE:
                return out
            cursor = page[-1].position

    def _read(self, shards: list[str], after: str | None, limit: int) -> list[LogRecord]:
        start_shard, start_seq = ("", None)
        if after:
            start_shard, _sep, start_seq = after.rpartition(":")
            if not _sep or not start_shard:
                raise SettingsError(f"{after!r} is not a Kinesis position (expected SHARD_ID:SEQUENCE_NUMBER)")
        out: list[LogRecord] = []
        for shard in shards:
            if len(out) >= limit:
                break
            if after and shard < start_shard:
                continue
            seq = start_seq if shard == start_shard else None
            out.extend(self.read_shard(shard, seq, limit - len(out)))
        return out
