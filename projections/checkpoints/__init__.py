"""Checkpoint stores: where snapshots of folded machine state are kept."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class CheckpointStore(Protocol):
    """Snapshots by correlation id, written conditionally.

    ``save`` stores ``data`` only if ``version`` is greater than the stored
    one's (so an older snapshot never overwrites a newer one) and says whether
    it did. ``data`` is an encoded ``Snapshot`` (projections.state).
    """

    name: str

    def save(self, correlation_id: str, version: int, data: bytes) -> bool: ...

    def load(self, correlation_id: str) -> bytes | None: ...


@runtime_checkable
class BatchCheckpoints(CheckpointStore, Protocol):
    """A store that saves a batch's snapshots together: one round trip (or one transaction) per batch."""

    def save_many(self, items: list[tuple[str, int, bytes]]) -> list[bool]:
        """``save`` for each ``(correlation_id, version, data)``; one answer each, in order."""
        ...
