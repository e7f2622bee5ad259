"""Retry sources: where a failed step waits for its next attempt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable


class DueRetry(NamedTuple):
    handle: str  # what ``done`` takes to remove it
    data: bytes  # the encoded retry record
    due: float | None = None  # epoch seconds it was due at, when the store knows (orders merged sides)


class ScheduledRetry(NamedTuple):
    key: str  # correlation id
    data: bytes  # the encoded retry record
    due: float  # epoch seconds when it may run


@runtime_checkable
class RetryStore(Protocol):
    """Failed steps waiting for their backoff to pass.

    Stores that cannot delay (Kinesis, SNS) deliver at once; ``due`` then
    returns nothing because their records arrive through the trigger.
    """

    name: str

    def schedule(self, retries: Sequence[ScheduledRetry]) -> None: ...

    def due(self, now: float, limit: int) -> list[DueRetry]: ...

    def done(self, handles: Sequence[str]) -> None: ...


@runtime_checkable
class WaitingRetries(Protocol):
    """A retry store that can say what waits in it (the embedded one), so ``fsmlog worker --once``
    can say when to come back; stores that deliver at once have nothing waiting to tell."""

    def pending(self) -> int: ...

    def next_due(self) -> float | None: ...


@runtime_checkable
class ListedRetries(Protocol):
    """A retry store that can list what waits in it (the embedded one): the due-time store holds
    both failed steps' retries and durable timers (``delay:``, ``timeout:``), and only their records
    tell them apart, so ``fsmlog worker --once`` can say which of each waits."""

    def scheduled(self) -> list[ScheduledRetry]: ...
