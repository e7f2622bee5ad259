"""The stream interface: where transition records are appended (and, for some sources, read back)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable


class OutRecord(NamedTuple):
    """One encoded record on its way to the stream; ``key`` is the partition key (the correlation id)."""

    key: str
    data: bytes


class LogRecord(NamedTuple):
    """One record read back from a stream, with the position it sits at."""

    position: str
    key: str
    data: bytes


@runtime_checkable
class EventLog(Protocol):
    """Append-only stream of encoded records.

    ``append`` either stores every record or raises: entries a service refuses
    inside a batch call are retried, never dropped. It returns one position
    per record, in order.
    """

    name: str

    def append(self, records: Sequence[OutRecord]) -> list[str]: ...


@runtime_checkable
class ReadableLog(EventLog, Protocol):
    """A stream fsmlog can read itself (the embedded log, Kinesis): the local worker and replay use it."""

    def read(self, after: str | None, limit: int) -> list[LogRecord]:
        """Records strictly after ``after`` (``None``: from the oldest kept), at most ``limit``."""
        ...

    def read_key(self, key: str, after: str | None = None) -> list[LogRecord]:
        """Every record of one partition key (one machine), oldest first."""
        ...
