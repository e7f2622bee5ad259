"""Dead letters: poison records parked with the reason, raw bytes and source position."""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Protocol, runtime_checkable


class DeadLetter(NamedTuple):
    id: str
    reason: str
    source: str  # e.g. the stream ARN or "sqlite:///.fsmlog/local.db"
    position: str  # where the record sat in its source
    data: bytes  # the raw record, exactly as received
    time: float


def letter_id(source: str, position: str, data: bytes) -> str:
    """The id of a parked record: the same record at the same place parks once, however often
    its batch is delivered again."""
    digest = hashlib.sha256()
    for part in (source.encode(), b"\0", str(position).encode(), b"\0", bytes(data)):
        digest.update(part)
    return digest.hexdigest()[:32]


@runtime_checkable
class DeadLetterStore(Protocol):
    name: str

    def park(self, reason: str, source: str, position: str, data: bytes, time: float) -> str:
        """Keep the record; returns its ``letter_id``. Parking the same record again keeps the first."""
        ...

    def list(self, limit: int = 100) -> list[DeadLetter]: ...

    def get(self, letter_id: str) -> DeadLetter | None: ...

    def remove(self, letter_id: str) -> None: ...
