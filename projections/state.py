"""Folded machine state and snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from eventlog.codec import decode, encode
from eventlog.errors import DecodeError
from eventlog.event import ABORTED, COMPLETED, FAILED, RETRY, STEP, Event

RUNNING = "running"


@dataclass(frozen=True, slots=True)
class MachineState:
    """A machine as its log says it is: the record that wins the fold.

    The winning record is the pending step (for a running machine) or the
    terminal record; everything about the machine (state, event, counters,
    context, error) is read from it.
    """

    last: Event

    @property
    def correlation_id(self) -> str:
        return self.last.correlation_id

    @property
    def machine(self) -> str:
        return self.last.machine

    @property
    def definition_hash(self) -> str:
        return self.last.definition_hash

    @property
    def status(self) -> str:
        kind = self.last.kind
        return kind if kind in (COMPLETED, FAILED, ABORTED) else RUNNING

    @property
    def terminal(self) -> bool:
        return self.last.terminal

    @property
    def state(self) -> str:
        return self.last.state

    @property
    def event(self) -> str | None:
        return self.last.event

    @property
    def steps(self) -> int:
        return self.last.steps

    @property
    def retries(self) -> int:
        return self.last.retries

    @property
    def time(self) -> float:
        return self.last.time

    @property
    def context(self) -> dict[str, Any]:
        return self.last.context

    @property
    def waiting_until(self) -> float | None:
        """When the machine's pending step may run (a ``delay`` or a wait state's ``timeout``), if it waits."""
        return None if self.last.terminal else self.last.due

    @property
    def waiting_for_event(self) -> bool:
        """Whether the machine idles in a ``wait`` state with no timeout (a step record firing nothing)."""
        last = self.last
        return last.kind in (STEP, RETRY) and last.event is None and last.event_id is None and last.steps > 0

    @property
    def error(self) -> str | None:
        if self.last.error_type is None:
            return None
        return f"{self.last.error_type}: {self.last.error_message}"

    @property
    def version(self) -> int:
        """A number that grows as the machine moves: what a checkpoint store compares so an older
        snapshot never overwrites a newer one. Terminal states are final."""
        if self.last.terminal:
            return 1 << 62
        return (self.last.steps << 20) | min(self.last.retries, (1 << 20) - 1)

    def as_dict(self) -> dict[str, Any]:
        """The state as JSON-ready fields; ``waiting_until`` only while a timer runs."""
        out = {
            "correlation_id": self.correlation_id,
            "machine": self.machine,
            "status": self.status,
            "state": self.state,
            "event": self.event,
            "steps": self.steps,
            "retries": self.retries,
            "time": self.time,
            "definition_hash": self.definition_hash,
            "error": self.error,
        }
        if self.waiting_until is not None:
            out["waiting_until"] = self.waiting_until
        return out


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A folded state plus the log position it covers, so a rebuild reads only what came after."""

    state: MachineState
    position: str
    definition_hash: str

    @property
    def correlation_id(self) -> str:
        return self.state.correlation_id

    @property
    def version(self) -> int:
        return self.state.version


SNAPSHOT_VERSION = 1


def encode_snapshot(snapshot: Snapshot) -> bytes:
    return msgpack.packb(
        [SNAPSHOT_VERSION, snapshot.position, snapshot.definition_hash, encode(snapshot.state.last)],
        use_bin_type=True,
    )


def decode_snapshot(data: bytes) -> Snapshot:
    try:
        fields = msgpack.unpackb(data, raw=False, max_map_len=0, max_ext_len=0)
    except Exception as exc:
        raise DecodeError(f"not an fsmlog snapshot: {exc}") from None
    if type(fields) is not list or len(fields) != 4 or fields[0] != SNAPSHOT_VERSION:
        raise DecodeError(f"not an fsmlog snapshot (version {SNAPSHOT_VERSION} expected)")
    _, position, dhash, last = fields
    if type(position) is not str or type(dhash) is not str or type(last) is not bytes:
        raise DecodeError("snapshot fields have the wrong types")
    return Snapshot(MachineState(decode(last)), position, dhash)
