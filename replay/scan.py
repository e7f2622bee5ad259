"""Scan a whole log: fold every machine, find the stalled ones, keep snapshots fresh.

A machine is *stalled* when it is still running and nothing has been appended
for it for longer than a threshold: its worker died mid-step, or its retry was
lost. ``redispatch`` (replay.rebuild) moves such a machine on.

Snapshots matter for retention: a rebuild reads the log only after the
snapshot's position, so as long as every machine's snapshot is younger than the
stream's retention, nothing a rebuild needs has expired. ``refresh_snapshots``
keeps it that way.

Both streams: a stream source with a secondary is read on every readable side
(``eventlog.sides``), and the union is folded. A machine whose records have all
left the stream (stuck longer than the retention) is still found: the
checkpoint store's snapshots are listed, and every running machine they show
is counted, whether or not the log still has records of it. A store that
cannot list its snapshots is named in ``ScanResult.notes``, never skipped
silently.

``ProjectionFile`` is where folded states land when they come from somewhere
other than a readable log (the KCL application), so ``stalled`` works on it too.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventlog.codec import decode, decode_fields, encode
from eventlog.errors import BackendError, DecodeError
from eventlog.log import EventLog
from eventlog.sides import PRIMARY, readable_sides, sides, split_position, tag_position, unreadable_sides
from projections.checkpoints import CheckpointStore
from projections.fold import fold, fold_records
from projections.state import MachineState, Snapshot, decode_snapshot, encode_snapshot

from .errors import ReplayError

SQLITE_BUSY, SQLITE_LOCKED = 5, 6  # SQLite's primary result codes (sqlite3 names them from Python 3.11 on)

ProgressFn = Callable[[int], None]
SNAPSHOT_PAGE = 1000

logger = logging.getLogger("fsmlog.replay")

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"1h30m"`` -> seconds (for ``--stalled-after``)."""
    value = text.strip().lower()
    if not value:
        raise ReplayError("empty duration; use e.g. 90s, 15m, 2h or 1d")
    try:
        return float(value)
    except ValueError:
        pass
    total = 0.0
    number = ""
    for ch in value:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in _UNITS and number:
            try:
                total += float(number) * _UNITS[ch]
            except ValueError:
                raise ReplayError(f"duration {text!r}: {number!r} is not a number") from None
            number = ""
        else:
            raise ReplayError(f"duration {text!r} is not understood; use e.g. 90s, 15m, 2h, 1d or 1h30m")
    if number:
        raise ReplayError(f"duration {text!r} ends without a unit (s, m, h or d)")
    return total


@dataclass(frozen=True, slots=True)
class Stalled:
    """A running machine with nothing appended for ``stuck_s`` seconds."""

    state: MachineState
    stuck_s: float

    @property
    def correlation_id(self) -> str:
        return self.state.correlation_id

    def as_row(self) -> dict[str, Any]:
        last = self.state.last
        return {
            "correlation_id": last.correlation_id,
            "machine": last.machine,
            "state": last.state,
            "last_event": last.event,
            "last_kind": last.kind,
            "steps": last.steps,
            "retries": last.retries,
            "stuck_s": round(self.stuck_s, 3),
        }


@dataclass(frozen=True)
class ScanResult:
    """Every machine of the log, folded, plus what the CLI shows."""

    states: dict[str, MachineState]
    stalled: list[Stalled]
    records: int
    bad_records: int
    position: str | None  # the last position read on the primary side (where a resumed scan goes on)
    # per correlation id: the position of its last record read, what a fresh snapshot covers
    # (the primary's when the machine has records there, else the secondary's, tagged)
    positions: dict[str, str] = field(default_factory=dict, repr=False)
    # the last position read on each side that was read ("secondary": the secondary's own position)
    side_positions: dict[str, str | None] = field(default_factory=dict)
    # running machines only the checkpoint store knows (no record of them left on any side)
    from_checkpoints: list[str] = field(default_factory=list)
    # what the scan could not look at: an unreadable side, a store that cannot list its snapshots...
    notes: list[str] = field(default_factory=list)

    def summary(self) -> list[dict[str, Any]]:
        """One row per machine name: how many machines are in each status, and how many stalled."""
        counts: dict[str, Counter] = {}
        for s in self.states.values():
            counts.setdefault(s.machine, Counter())[s.status] += 1
        for st in self.stalled:
            counts[st.state.machine]["stalled"] += 1
        rows = []
        for name in sorted(counts):
            c = counts[name]
            rows.append({
                "machine": name,
                "running": c["running"],
                "stalled": c["stalled"],
                "completed": c["completed"],
                "failed": c["failed"],
                "aborted": c["aborted"],
                "total": c["running"] + c["completed"] + c["failed"] + c["aborted"],
            })
        return rows


def _children_ended(parent: MachineState, by_id: dict[str, MachineState]) -> float | None:
    """When the last of a waiting parent's children ended, if all have (its join is overdue)."""
    try:
        ids = parent.context.get("children")
    except DecodeError:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return None
    kids = [by_id.get(i) for i in ids]
    if any(k is None or not k.terminal for k in kids):
        return None
    return max([parent.time, *(k.time for k in kids if k is not None)])


def _since(s: MachineState) -> float:
    """When a running machine's pending step became runnable: its record's time, or its timer's due time."""
    return max(s.time, s.waiting_until or 0.0)


def stalled(states: Iterable[MachineState], *, now: float, stalled_after_s: float) -> list[Stalled]:
    """Running machines whose last record is older than ``stalled_after_s``, longest stuck first.

    A machine waiting on a timer is stuck only from its due time on; one waiting in a ``wait`` state
    for an event from outside, with no timeout, is never stuck (it waits as told) — unless it is the
    parent of a stuck child machine, which holds it up."""
    if stalled_after_s < 0:
        raise ReplayError(f"stalled_after_s must be >= 0, got {stalled_after_s}")
    states = list(states)
    out = [Stalled(s, now - _since(s)) for s in states
           if not s.terminal and not (s.waiting_for_event and s.waiting_until is None)
           and now - _since(s) > stalled_after_s]
    by_id = {s.correlation_id: s for s in states}
    out += [Stalled(s, now - ended) for s in states if s.waiting_for_event
            and (ended := _children_ended(s, by_id)) is not None and now - ended > stalled_after_s]
    held_up = {x.state.last.parent: x.stuck_s for x in out if x.state.last.parent is not None}
    listed = {x.correlation_id for x in out}
    out += [Stalled(s, held_up[s.correlation_id]) for s in states
            if s.correlation_id in held_up and s.correlation_id not in listed and not s.terminal]
    out.sort(key=lambda x: (-x.stuck_s, x.correlation_id))
    return out


def _fold_batch(states: dict[str, MachineState], datas: list[bytes]) -> tuple[dict[str, MachineState], int]:
    """Fold a batch fast; if one record is malformed, redo the batch record by record and skip the bad ones."""
    try:
        return fold_records(states, datas), 0
    except DecodeError:
        good = []
        bad = 0
        for d in datas:
            try:
                decode_fields(d)
            except DecodeError:
                bad += 1
            else:
                good.append(d)
        return fold_records(states, good), bad


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds the lock (SQLITE_BUSY or SQLITE_LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+; extended codes keep the primary in the low byte
    if code is None:
        return "locked" in str(exc)  # Python 3.10 gives SQLite's message only
    return (code & 0xFF) in (SQLITE_BUSY, SQLITE_LOCKED)


def _unwrap(backend: Any) -> Any:
    for _ in range(8):
        inner = getattr(backend, "wrapped", None)
        if inner is None or inner is backend:
            break
        backend = inner
    return backend


def _sqlite_snapshots(store: Any) -> Iterable[tuple[str, bytes]]:
    last = ""
    while True:
        rows = store.db.execute("SELECT cid, data FROM checkpoints WHERE cid > ? ORDER BY cid LIMIT ?",
                                (last, SNAPSHOT_PAGE))
        for cid, data in rows:
            yield str(cid), bytes(data)
        if len(rows) < SNAPSHOT_PAGE:
            return
        last = rows[-1][0]


def _dynamodb_snapshots(store: Any) -> Iterable[tuple[str, bytes]]:
    from eventlog import aws

    for page in store._api.pages("scan", TableName=store.table, ConsistentRead=True):
        for item in page.get("Items", []):
            yield item["cid"]["S"], aws.unpack_blob(item)


def snapshot_lister(store: Any) -> Callable[[], Iterable[tuple[str, bytes]]] | None:
    """How to list every ``(correlation_id, snapshot)`` of one checkpoint backend, or ``None`` if it cannot.

    A backend's own ``snapshots()`` wins; the embedded file and DynamoDB are
    listed directly (a paged SELECT, a paged Scan)."""
    own = getattr(store, "snapshots", None)
    if callable(own):
        return own
    inner = _unwrap(store)
    own = getattr(inner, "snapshots", None)
    if callable(own):
        return own
    try:
        from projections.checkpoints.sqlite import SqliteCheckpoints
    except ImportError:  # pragma: no cover
        SqliteCheckpoints = None  # type: ignore[assignment,misc]
    if SqliteCheckpoints is not None and isinstance(inner, SqliteCheckpoints):
        return lambda: _sqlite_snapshots(inner)
    if type(inner).__name__ == "DynamoDBCheckpoints" and hasattr(inner, "_api"):
        return lambda: _dynamodb_snapshots(inner)
    return None


@dataclass(frozen=True)
class SnapshotListing:
    """Every snapshot of every side of a checkpoint store (the newest per machine)."""

    snapshots: dict[str, Snapshot]
    notes: list[str]  # one per side that could not be listed (or only in part)
    complete: bool  # every side was listed to its end


def list_snapshots(checkpoints: Any) -> SnapshotListing:
    """List every side of the checkpoint store; a side that cannot be listed is named in the notes."""
    found: dict[str, Snapshot] = {}
    notes: list[str] = []
    complete = True
    for side, store in sides(checkpoints):
        name = getattr(store, "name", repr(store))
        lister = snapshot_lister(store)
        if lister is None:
            complete = False
            notes.append(f"checkpoint store {name} ({side}) cannot list its snapshots: a running machine "
                         f"with no record left in the stream is not shown")
            continue
        bad = 0
        try:
            for cid, raw in lister():
                try:
                    snap = decode_snapshot(raw)
                except DecodeError:
                    bad += 1
                    continue
                known = found.get(cid)
                if known is None or snap.version > known.version:
                    found[cid] = snap
        except BackendError as exc:
            complete = False
            notes.append(f"listing the snapshots of {name} ({side}) failed: {exc}; a running machine with no "
                         f"record left in the stream may be missing")
        if bad:
            notes.append(f"{bad} undecodable snapshot(s) in {name} ({side}) skipped")
    return SnapshotListing(found, notes, complete)


def scan(
    log: EventLog,
    checkpoints: CheckpointStore | None,
    *,
    now: float,
    stalled_after_s: float,
    progress: ProgressFn | None = None,
    batch: int = 10_000,
    after: str | None = None,
    list_checkpoints: bool = True,
) -> ScanResult:
    """Read the whole log (every readable side) in batches, fold every machine and list the stalled ones.

    ``after`` (a position, tagged for the secondary) resumes the side it names;
    the other sides are read from their start.

    Snapshots count too: with ``list_checkpoints`` every snapshot is listed, so
    a running machine whose records have all expired is found; a snapshot that
    knows a later state than the log (records trimmed by retention) wins, so a
    machine is never reported stalled on stale evidence. A checkpoint store
    that cannot list is consulted for the stall candidates only, and named in
    ``notes``.
    """
    to_read = readable_sides(log)
    if not to_read:
        raise ReplayError(f"log {getattr(log, 'name', log)!r} cannot be read back; scan needs a readable log "
                          f"(the embedded sqlite: log or Kinesis)")
    notes = [f"the {side} stream {getattr(b, 'name', b)} cannot be read back; its records are not counted"
             for side, b in unreadable_sides(log)]
    after_side, after_raw = split_position(after)
    states: dict[str, MachineState] = {}
    positions: dict[str, str] = {}
    side_positions: dict[str, str | None] = {}
    on_primary: set[str] = set()
    total = 0
    bad = 0
    failed: list[tuple[str, Any, BackendError]] = []
    for side, backend in to_read:
        position = after_raw if side == after_side else None
        try:
            while True:
                records = backend.read(position, batch)
                if not records:
                    break
                datas = []
                for rec in records:
                    datas.append(rec.data)
                    if side == PRIMARY:
                        on_primary.add(rec.key)
                        positions[rec.key] = rec.position
                    elif rec.key not in on_primary:
                        positions[rec.key] = tag_position(side, rec.position)
                states, nbad = _fold_batch(states, datas)
                bad += nbad
                total += len(records)
                position = records[-1].position
                if progress is not None:
                    progress(total)
        except BackendError as exc:
            failed.append((side, backend, exc))
        side_positions[side] = position
    if len(failed) == len(to_read):
        raise failed[0][2]
    for side, backend, err in failed:
        logger.warning("scan: the %s stream %s failed: %s", side, getattr(backend, "name", backend), err)
        notes.append(f"the {side} stream {getattr(backend, 'name', backend)} could not be read to its end "
                     f"({err}); machines on it may be missing or behind")

    candidates, from_checkpoints, more = _with_checkpoints(states, checkpoints, now=now,
                                                          stalled_after_s=stalled_after_s,
                                                          list_checkpoints=list_checkpoints)
    return ScanResult(states, candidates, total, bad, side_positions.get(PRIMARY), positions, side_positions,
                      from_checkpoints, notes + more)


def _with_checkpoints(states: dict[str, MachineState], checkpoints: Any, *, now: float, stalled_after_s: float,
                      list_checkpoints: bool = True) -> tuple[list[Stalled], list[str], list[str]]:
    """Merge the checkpoint store into ``states`` (in place): every snapshot when the store can list
    them, else the stall candidates' only. Returns (stalled, machines only the store knows, notes)."""
    from_checkpoints: list[str] = []
    notes: list[str] = []
    listed = False
    if checkpoints is not None and list_checkpoints:
        listing = list_snapshots(checkpoints)
        notes.extend(listing.notes)
        listed = listing.complete
        for cid, snap in listing.snapshots.items():
            known = states.get(cid)
            if known is not None:
                merged = fold(known, [snap.state.last])
                if merged is not None:
                    states[cid] = merged
            elif not snap.state.terminal and snap.correlation_id == cid:
                states[cid] = snap.state
                from_checkpoints.append(cid)
    candidates = stalled(states.values(), now=now, stalled_after_s=stalled_after_s)
    if checkpoints is not None and candidates and not listed:
        for cand in candidates:
            raw = checkpoints.load(cand.correlation_id)
            if raw is None:
                continue
            snap = decode_snapshot(raw)
            merged = fold(states[cand.correlation_id], [snap.state.last])
            if merged is not None:
                states[cand.correlation_id] = merged
        candidates = stalled(states.values(), now=now, stalled_after_s=stalled_after_s)
    from_checkpoints.sort()
    return candidates, from_checkpoints, notes


def with_snapshots(result: ScanResult, checkpoints: Any, *, now: float, stalled_after_s: float) -> ScanResult:
    """``result`` (e.g. from a KCL projection file) with the checkpoint store's snapshots merged in,
    as ``scan`` does for the log: running machines only the store knows are added."""
    states = dict(result.states)
    candidates, from_checkpoints, notes = _with_checkpoints(states, checkpoints, now=now,
                                                            stalled_after_s=stalled_after_s)
    return ScanResult(states, candidates, result.records, result.bad_records, result.position, result.positions,
                      result.side_positions, from_checkpoints, result.notes + notes)


@dataclass(frozen=True)
class RefreshReport:
    written: list[str]
    up_to_date: int
    skipped_no_position: int


def refresh_snapshots(
    result: ScanResult,
    checkpoints: CheckpointStore,
    *,
    now: float,
    max_age_s: float,
    dry_run: bool = False,
) -> RefreshReport:
    """Write a fresh snapshot for every machine whose snapshot is missing, or behind and older than ``max_age_s``.

    A snapshot's age is the time of the record it holds: the records a rebuild
    would need come after it, so once that is older than the stream's retention
    they may be gone. A snapshot that already holds the machine's latest state
    never needs refreshing, however old.
    """
    written: list[str] = []
    up_to_date = 0
    no_pos = 0
    only_snapshot = set(result.from_checkpoints)
    for cid, state in result.states.items():
        if cid in only_snapshot:  # its state came from its snapshot: nothing newer to write
            up_to_date += 1
            continue
        pos = result.positions.get(cid)
        if pos is None:
            no_pos += 1
            continue
        raw = checkpoints.load(cid)
        if raw is not None:
            snap = decode_snapshot(raw)
            if snap.version >= state.version or now - snap.state.time <= max_age_s:
                up_to_date += 1
                continue
        if dry_run:
            written.append(cid)
            continue
        data = encode_snapshot(Snapshot(state, pos, state.definition_hash))
        if checkpoints.save(cid, state.version, data):
            written.append(cid)
        else:
            up_to_date += 1  # someone saved a newer one meanwhile
    return RefreshReport(written, up_to_date, no_pos)


@dataclass(frozen=True, slots=True)
class ShardProgress:
    shard_id: str
    sequence: str | None
    records: int
    bad_records: int
    checkpointed: str | None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS machines (correlation_id TEXT PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS shards (
    shard_id TEXT PRIMARY KEY, sequence TEXT, records INTEGER NOT NULL DEFAULT 0,
    bad_records INTEGER NOT NULL DEFAULT 0, checkpointed TEXT
);
"""


class ProjectionFile:
    """Folded machine states in a SQLite file that several processes merge into.

    Every write merges under the fold (stored winner vs. new winner), so the
    KCL's one-process-per-shard writers, redelivered batches and restarts all
    agree on the result.
    """

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None,
                                   check_same_thread=False)
        # the KCL starts one process per shard at once: on a new file they race to switch it to WAL,
        # which SQLite answers with "database is locked" at once (no busy wait), so retry
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                break
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def merge(
        self,
        states: Mapping[str, MachineState],
        *,
        shard_id: str | None = None,
        sequence: str | None = None,
        records: int = 0,
        bad_records: int = 0,
    ) -> int:
        """Fold ``states`` into the file (and count a shard's progress) in one transaction; returns rows changed."""
        changed = 0
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for cid, state in states.items():
                    row = db.execute("SELECT record FROM machines WHERE correlation_id = ?", (cid,)).fetchone()
                    if row is not None:
                        stored = MachineState(decode(row[0]))
                        merged = fold(stored, [state.last])
                        if merged is None or merged is stored:
                            continue
                        state = merged
                    db.execute("INSERT OR REPLACE INTO machines (correlation_id, record) VALUES (?, ?)",
                               (cid, encode(state.last, limit=1 << 62)))
                    changed += 1
                if shard_id is not None:
                    db.execute(
                        "INSERT INTO shards (shard_id, sequence, records, bad_records) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(shard_id) DO UPDATE SET sequence = COALESCE(excluded.sequence, sequence), "
                        "records = records + excluded.records, bad_records = bad_records + excluded.bad_records",
                        (shard_id, sequence, records, bad_records),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return changed

    def mark_checkpointed(self, shard_id: str, sequence: str | None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO shards (shard_id, checkpointed) VALUES (?, ?) "
                "ON CONFLICT(shard_id) DO UPDATE SET checkpointed = excluded.checkpointed",
                (shard_id, sequence or "SHARD_END"),
            )

    def load_all(self) -> dict[str, MachineState]:
        with self._lock:
            rows = self._db.execute("SELECT correlation_id, record FROM machines").fetchall()
        return {cid: MachineState(decode(rec)) for cid, rec in rows}

    def progress(self) -> dict[str, ShardProgress]:
        with self._lock:
            rows = self._db.execute(
                "SELECT shard_id, sequence, records, bad_records, checkpointed FROM shards").fetchall()
        return {r[0]: ShardProgress(*r) for r in rows}

    def totals(self) -> tuple[int, int]:
        """(records, bad records) over every shard."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(records), 0), COALESCE(SUM(bad_records), 0) FROM shards").fetchone()
        return int(row[0]), int(row[1])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def scan_projections(path: str | Path, *, now: float, stalled_after_s: float) -> ScanResult:
    """The stalled machines of a projection file written by the KCL application."""
    pf = ProjectionFile(path)
    try:
        states = pf.load_all()
        records, bad = pf.totals()
    finally:
        pf.close()
    return ScanResult(states, stalled(states.values(), now=now, stalled_after_s=stalled_after_s),
                      records, bad, None, {})
