"""Rebuild one machine from its latest snapshot plus the log after it, and move a stalled one on.

The fold is a semilattice join, so snapshot + tail gives exactly the state a
fold of the whole history gives; the tail only has to contain every record
after the snapshot's position. On the embedded log that is ``read_key``; on
Kinesis the tail starts on the shard the position names and continues into
that shard's children (after a split or merge the machine's partition key
lives on exactly one child of each generation), found by their parent links.

Both streams: a stream source with a secondary holds records on both sides
(``eventlog.sides``). The snapshot's position names its side (``secondary|...``
for the secondary's; untagged is the primary's); the tail is read after it on
that side and in full on every other readable side, and the union is folded
(the fold does not care about order or duplicates).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from eventlog.codec import decode, encode
from eventlog.errors import BackendError, DecodeError
from eventlog.event import RETRY, Event
from eventlog.log import EventLog, LogRecord, OutRecord
from eventlog.settings import Settings
from eventlog.sides import read_machine, readable_sides, sides
from projections.fold import fold
from projections.state import MachineState, Snapshot, decode_snapshot

from .errors import BadPosition, ReplayError, UnknownCorrelationId, UnreadableLog

if TYPE_CHECKING:
    from eventlog.backends.kinesis import KinesisLog

PAGE = 10_000

log = logging.getLogger("fsmlog.replay")


@dataclass(frozen=True)
class Rebuilt:
    """A machine as snapshot + tail says it is, with the pieces kept for display and checks."""

    snapshot_state: MachineState | None
    rebuilt_state: MachineState
    tail_events: tuple[Event, ...]
    position: str | None  # the last log position read (the snapshot's, if the tail was empty)
    bad_records: int = 0
    snapshot: Snapshot | None = None
    records: tuple[LogRecord, ...] = field(default=(), repr=False)  # the tail read (positions tagged by side)
    warnings: tuple[str, ...] = ()  # e.g. the snapshot's shard has expired: records may be missing

    @property
    def correlation_id(self) -> str:
        return self.rebuilt_state.correlation_id

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.rebuilt_state.as_dict(),
            "snapshot": None if self.snapshot_state is None else self.snapshot_state.as_dict(),
            "snapshot_position": None if self.snapshot is None else self.snapshot.position,
            "tail_records": len(self.tail_events),
            "bad_records": self.bad_records,
            "position": self.position,
            "warnings": list(self.warnings),
        }


def readable(log: EventLog) -> EventLog:
    """The backend behind chaos/failover wrappers (the primary side of a failover proxy).

    Only for what concerns one backend (e.g. "is it Kinesis?"); reading a source
    goes through ``eventlog.sides`` so that both sides are read."""
    seen = 0
    while seen < 8:
        seen += 1
        inner = getattr(log, "wrapped", None)
        if inner is not None and inner is not log:
            log = inner
            continue
        primary = getattr(log, "primary", None)
        if primary is not None and getattr(log, "secondary", None) is not None:
            log = primary
            continue
        break
    return log


def _is_kinesis(log: EventLog) -> TypeGuard[KinesisLog]:
    return callable(getattr(log, "read_shard", None)) and hasattr(log, "stream")


def _kinesis_client(log: KinesisLog, settings: Settings | None) -> Any:
    from eventlog import aws

    if settings is not None:
        return aws.client("kinesis", log.arn, settings)
    api = getattr(log, "_api", None)
    if api is not None and getattr(api, "client", None) is not None:
        return api.client
    return aws.client("kinesis", log.arn, None)


def list_shards(client: Any, stream: str) -> list[dict[str, Any]]:
    """Every shard the stream still keeps, closed parents included, with their parent links."""
    from eventlog import aws

    listing = aws.Api("kinesis", stream, client).pages("list_shards", StreamName=stream)
    return [shard for page in listing for shard in page.get("Shards", [])]


def _covers(shard: dict[str, Any], h: int) -> bool:
    r = shard["HashKeyRange"]
    return int(r["StartingHashKey"]) <= h <= int(r["EndingHashKey"])


def kinesis_tail(log: KinesisLog, key: str, after: str | None, *, settings: Settings | None = None,
                 on_gap: Callable[[str], None] | None = None) -> list[LogRecord]:
    """Every record of ``key`` after ``after`` ("shardId:sequenceNumber"; None: from the oldest kept).

    Starts on the position's shard (AFTER_SEQUENCE_NUMBER), reads it to its end,
    then follows the child shards whose hash range holds the key, generation by
    generation. Without a position, starts at the oldest kept shards of the key's lineage.

    When the position's shard has expired, ``BadPosition`` is raised, unless
    ``on_gap`` is given: then it is called with the explanation and every kept
    record of the key is read instead (the snapshot plus whatever is left).
    """
    from eventlog.backends.kinesis import hash_key

    client = _kinesis_client(log, settings)
    shards = list_shards(client, log.stream)
    by_id = {s["ShardId"]: s for s in shards}
    h = hash_key(key)
    children: dict[str, list[str]] = {}
    for s in shards:
        for parent in (s.get("ParentShardId"), s.get("AdjacentParentShardId")):
            if parent:
                children.setdefault(parent, []).append(s["ShardId"])

    queue: list[tuple[str, str | None]]
    if after:
        shard_id, sep, seq = after.rpartition(":")
        if not sep or not shard_id or not seq:
            raise BadPosition(f"{after!r} is not a Kinesis position (expected SHARD_ID:SEQUENCE_NUMBER)")
        if shard_id not in by_id:
            # the snapshot's shard has expired with its records: the snapshot is too old for this stream
            message = (
                f"snapshot position {after!r} names shard {shard_id}, which stream {log.stream} no longer keeps; "
                f"the records after it have passed retention (refresh snapshots more often than the retention: "
                f"`fsmlog replay scan --refresh-snapshots-older-than`)"
            )
            if on_gap is None:
                raise BadPosition(message)
            on_gap(message)
            after = None
    if after:
        queue = [(shard_id, seq)]
    else:
        lineage = [s for s in shards if _covers(s, h)]
        ids = {s["ShardId"] for s in lineage}
        roots = [s["ShardId"] for s in lineage
                 if not any(p in ids for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p)]
        queue = [(sid, None) for sid in sorted(roots)]

    out: list[LogRecord] = []
    visited: set[str] = set()
    while queue:
        shard_id, cursor = queue.pop(0)
        if shard_id in visited:
            continue
        visited.add(shard_id)
        while True:
            page = log.read_shard(shard_id, cursor, PAGE)
            out.extend(r for r in page if r.key == key)
            if len(page) < PAGE:
                break
            cursor = page[-1].position.rpartition(":")[2]
        for child in sorted(children.get(shard_id, ())):
            if child not in visited and _covers(by_id[child], h):
                queue.append((child, None))
    return out


def side_reader(settings: Settings | None = None, on_gap: Callable[[str], None] | None = None) -> Any:
    """``(backend, key, after) -> records`` for ``eventlog.sides.read_machine``: Kinesis follows its shard
    lineage (``kinesis_tail``), every other readable backend answers ``read_key``."""

    def read(backend: Any, key: str, after: str | None) -> list[LogRecord]:
        inner = readable(backend)
        if _is_kinesis(inner):
            return kinesis_tail(inner, key, after, settings=settings, on_gap=on_gap)
        return backend.read_key(key, after=after)

    return read


def read_tail(log: EventLog, key: str, after: str | None, *, settings: Settings | None = None,
              on_gap: Callable[[str], None] | None = None,
              on_skipped: Callable[[str, BackendError], None] | None = None) -> list[LogRecord]:
    """The records of ``key`` after ``after`` on every readable side of the stream source.

    ``after`` may be tagged with its side (``eventlog.sides``); records read
    from the secondary come back with tagged positions.
    """
    if not readable_sides(log):
        names = ", ".join(f"{side} {getattr(b, 'name', b)!r}" for side, b in sides(log))
        raise UnreadableLog(
            f"log {getattr(log, 'name', log)!r} cannot be read back ({names}), so machines cannot be rebuilt "
            f"from it; rebuild needs the embedded sqlite: log or Kinesis as a stream source"
        )
    return read_machine(log, key, after, reader=side_reader(settings, on_gap), on_skipped=on_skipped)


def rebuild(
    cid: str,
    services: Any,
    *,
    definitions: Any = None,
    settings: Settings | None = None,
) -> Rebuilt:
    """Latest snapshot + every record after its position, folded. Raises ``UnknownCorrelationId``.

    ``definitions`` (optional) checks that the machine is still defined; records
    of machines the definitions lack raise ``ReplayError``.
    """
    raw = services.checkpoints.load(cid)
    snapshot = decode_snapshot(raw) if raw else None
    if snapshot is not None and snapshot.correlation_id != cid:
        raise ReplayError(f"the checkpoint store returned a snapshot of {snapshot.correlation_id!r} for {cid!r}")
    base = snapshot.state if snapshot else None
    after = snapshot.position if snapshot else None
    warnings: list[str] = []

    def gap(message: str) -> None:
        log.warning("rebuilding %s: %s; folding the snapshot with every record still kept", cid, message)
        warnings.append(message)

    skipped: list[BackendError] = []
    records = read_tail(services.log, cid, after, settings=settings, on_gap=gap,
                        on_skipped=lambda side, err: skipped.append(err))
    events: list[Event] = []
    bad = 0
    for rec in records:
        try:
            ev = decode(rec.data)
        except DecodeError:
            bad += 1
            continue
        if ev.correlation_id != cid:  # a record filed under this key that names another machine
            bad += 1
            continue
        events.append(ev)
    state = fold(base, events)
    if state is None and skipped:
        raise skipped[0]  # its records may be on the side that failed: not "no such machine"
    if state is None:
        raise UnknownCorrelationId(cid, getattr(services.log, "name", "the log"))
    if definitions is not None and state.machine not in definitions:
        raise ReplayError(
            f"machine {cid!r} is a {state.machine!r}, which the loaded definitions do not define; "
            f"load the fsm.yaml that defines it"
        )
    position = records[-1].position if records else after
    return Rebuilt(base, state, tuple(events), position, bad, snapshot, tuple(records), tuple(warnings))


def redispatch(
    rebuilt: Rebuilt,
    services: Any,
    clock: Callable[[], float] = time.time,
    *,
    reason: str = "no progress; redispatched by fsmlog replay",
) -> Event | None:
    """Append the pending step of a running machine again as a retry (retries + 1).

    Same steps, state, event and context: the worker runs the step the machine
    is waiting for. If that step already ran to completion its idempotency flag
    makes the engine skip it; if it died mid-step, it runs again and actions
    with external effects use ``obj["idempotency_key"]`` (stable across both).
    Returns the appended record, or ``None`` for a machine that has ended.
    """
    retry = retry_record(rebuilt.rebuilt_state, clock, reason=reason)
    if retry is not None:
        services.log.append([OutRecord(retry.correlation_id, encode(retry))])
    return retry


def retry_record(state: MachineState, clock: Callable[[], float] = time.time, *,
                 reason: str = "no progress; redispatched by fsmlog replay") -> Event | None:
    """The record ``redispatch`` appends for ``state`` (``None`` for an ended machine)."""
    if state.terminal:
        return None
    last = state.last
    return last.evolve(kind=RETRY, retries=last.retries + 1, time=float(clock()),
                       error_type="Redispatched", error_message=reason)


def redispatch_many(
    correlation_ids: list[str],
    services: Any,
    clock: Callable[[], float] = time.time,
    *,
    settings: Settings | None = None,
    dry_run: bool = True,
) -> list[tuple[Rebuilt, Event | None]]:
    """Rebuild each machine afresh and (unless ``dry_run``) redispatch it; what ``scan --redispatch`` runs.

    Each machine is rebuilt right before its redispatch, so one that moved on
    since the scan (or ended) is redispatched at its current step, or not at all.
    With ``dry_run`` the records that would be appended are returned, not appended.
    """
    out: list[tuple[Rebuilt, Event | None]] = []
    for cid in correlation_ids:
        rebuilt = rebuild(cid, services, settings=settings)
        if dry_run:
            out.append((rebuilt, retry_record(rebuilt.rebuilt_state, clock)))
        else:
            out.append((rebuilt, redispatch(rebuilt, services, clock)))
    return out
