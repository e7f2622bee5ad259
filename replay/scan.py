"""Scan a whole log: fold every machine, find the stalled ones, keep snapshots fresh.

A machine is *stalled* when it is still running and nothing has been appended
for it for longer than a threshold: its worker died mid-step, or its retry was
lost. ``redispatch`` (replay.rebuild) moves such a machine on.

Snapshots matter for retention: a rebuild reads the log only after the
snapshot's position, so as long as every machine's snapshot is younger than the
stream's retention, nothing a rebuild needs has expired. ``refresh_snapshots``
keeps it that way.

``ProjectionFile`` is where folded states land when they come from somewhere
other than a readable log (the KCL application), so ``stalled`` works on it too.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventlog.codec import decode, decode_fields, encode
from eventlog.errors import DecodeError
from eventlog.log import ReadableLog
from projections.checkpoints import CheckpointStore
from projections.fold import fold, fold_records
from projections.state import MachineState, Snapshot, decode_snapshot, encode_snapshot

from .errors import ReplayError

ProgressFn = Callable[[int], None]

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
    position: str | None
    # per correlation id: the position of its last record read, what a fresh snapshot covers
    positions: dict[str, str] = field(default_factory=dict, repr=False)

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


def stalled(states: Iterable[MachineState], *, now: float, stalled_after_s: float) -> list[Stalled]:
    """Running machines whose last record is older than ``stalled_after_s``, longest stuck first."""
    if stalled_after_s < 0:
        raise ReplayError(f"stalled_after_s must be >= 0, got {stalled_after_s}")
    out = [Stalled(s, now - s.time) for s in states
           if not s.terminal and now - s.time > stalled_after_s]
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


def scan(
    log: ReadableLog,
    checkpoints: CheckpointStore | None,
    *,
    now: float,
    stalled_after_s: float,
    progress: ProgressFn | None = None,
    batch: int = 10_000,
    after: str | None = None,
) -> ScanResult:
    """Read the whole log in batches, fold every machine and list the stalled ones.

    Snapshots are consulted only for stall candidates: if the checkpoint store
    knows a later state than the log (records trimmed by retention), that state
    wins, so a machine is never reported stalled on stale evidence.
    """
    read = getattr(log, "read", None)
    if read is None:
        raise ReplayError(f"log {getattr(log, 'name', log)!r} cannot be read back; scan needs a readable log "
                          f"(the embedded sqlite: log or Kinesis)")
    states: dict[str, MachineState] = {}
    positions: dict[str, str] = {}
    total = 0
    bad = 0
    position = after
    while True:
        records = read(position, batch)
        if not records:
            break
        datas = []
        for rec in records:
            datas.append(rec.data)
            positions[rec.key] = rec.position
        states, nbad = _fold_batch(states, datas)
        bad += nbad
        total += len(records)
        position = records[-1].position
        if progress is not None:
            progress(total)
    candidates = stalled(states.values(), now=now, stalled_after_s=stalled_after_s)
    if checkpoints is not None and candidates:
        for cand in candidates:
            raw = checkpoints.load(cand.correlation_id)
            if raw is None:
                continue
            snap = decode_snapshot(raw)
            merged = fold(states[cand.correlation_id], [snap.state.last])
            if merged is not None:
                states[cand.correlation_id] = merged
        candidates = stalled(states.values(), now=now, stalled_after_s=stalled_after_s)
    return ScanResult(states, candidates, total, bad, position, positions)


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
    for cid, state in result.states.items():
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
                if "locked" not in str(exc) or time.monotonic() > deadline:
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
