"""Dead letters: poison records parked with the reason, raw bytes and source position."""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable


class DeadLetter(NamedTuple):
    id: str
    reason: str
    source: str  # e.g. the stream ARN or "sqlite:///.fsmlog/local.db"
    position: str  # where the record sat in its source
    data: bytes  # the raw record, exactly as received
    time: float


@runtime_checkable
class DeadLetterStore(Protocol):
    name: str

    def park(self, reason: str, source: str, position: str, data: bytes, time: float) -> str: ...

    def list(self, limit: int = 100) -> list[DeadLetter]: ...

    def get(self, letter_id: str) -> DeadLetter | None: ...

    def remove(self, letter_id: str) -> None: ...
