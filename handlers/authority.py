"""The log as the authority: a machine's state from its snapshot plus the tail of every stream side.

Caches, retry stores and checkpoints are accelerators that may be stale, empty or split
between two sides; the log is not. When the step gate's store knows nothing of a machine,
the gate asks here: the snapshot (if any) says where to start, and every readable side of
the stream is read after it (the fold is order- and duplicate-insensitive, so the union of
both streams is exactly right). Every side must answer: a verdict from half the log could
run a completed step again, so a side that fails fails the question, and the record is
handed back for redelivery.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from eventlog.codec import decode
from eventlog.errors import BackendError, DecodeError
from eventlog.event import Event
from eventlog.log import LogRecord
from eventlog.sides import readable_sides, split_position, tagged
from projections.checkpoints import CheckpointStore
from projections.fold import fold
from projections.state import MachineState, Snapshot, decode_snapshot

log = logging.getLogger("fsmlog.authority")


class LogAuthority:
    """Answers "what does the log hold of this machine" for the gate, status and abort."""

    def __init__(self, stream: object, checkpoints: CheckpointStore) -> None:
        self.stream = stream
        self.checkpoints = checkpoints
        self.reads = 0  # machines read back from the log (each costs a snapshot load and a tail per side)

    @property
    def readable(self) -> bool:
        """Whether any side of the stream can be read back (Kinesis, the embedded log; not SNS/SQS)."""
        return bool(readable_sides(self.stream))

    def snapshot(self, cid: str) -> Snapshot | None:
        try:
            data = self.checkpoints.load(cid)
        except BackendError as exc:  # a snapshot only shortens the read: read the whole log instead
            log.warning("snapshot of %s not loaded (%s); reading its whole log", cid, exc)
            return None
        return decode_snapshot(data) if data else None

    def tail(self, cid: str, after: str | None) -> list[LogRecord]:
        """Every record of the machine on every readable side after ``after`` (a possibly tagged position)."""
        after_side, after_raw = split_position(after)
        out: list[LogRecord] = []
        for name, backend in readable_sides(self.stream):
            out.extend(tagged(name, backend.read_key(cid, after=after_raw if name == after_side else None)))
        return out

    def state(self, cid: str) -> MachineState | None:
        """The machine as the log has it: snapshot plus the tails of both streams."""
        snap = self.snapshot(cid)
        state = snap.state if snap else None
        if not self.readable:
            return state
        self.reads += 1
        return fold(state, _decoded(self.tail(cid, snap.position if snap else None)))

    def last_records(self, cids: Sequence[str]) -> Mapping[str, Event | None]:
        """The greatest record of each machine (``None``: the log knows nothing of it)."""
        out: dict[str, Event | None] = {}
        for cid in cids:
            state = self.state(cid)
            out[cid] = state.last if state is not None else None
        return out


def _decoded(records: Sequence[LogRecord]) -> list[Event]:
    out = []
    for r in records:
        try:
            out.append(decode(r.data))
        except DecodeError:  # a poison record is parked by whoever is delivered it; it moves no machine
            continue
    return out
