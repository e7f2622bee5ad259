"""The step gate's store: what a cache keeps per machine so that a handled attempt never runs twice.

A store keeps, per machine (correlation id ``cid``):

* the **lease** ``lease:<cid>`` with its owner, expiry and fence token;
* the **mark**, a high-water ordinal of the attempts handled (see ``ordinal``), kept for the
  dedupe window; ``None`` when the store knows nothing of the machine (never saw it, evicted,
  flushed, or the other side of a failover pair saw it);
* the **abort** flag.

Every call takes a whole batch, so a batch costs one round trip to begin and one to end
where the store can do that (SQLite: one transaction; Redis: one pipeline of scripts).

Tokens are ``max(counter + 1, token_floor(steps, retries))``: the floor derives from the
record in hand, so a store that never saw the machine (the secondary, or a store that lost
its counter) still issues a token above every token issued for an earlier attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from . import Cache

RETRY_SLOTS = 1 << 20  # attempts per step an ordinal can tell apart
ATTEMPT_BITS = 10  # retries a token floor tells apart (more retries share the last slot)
TIME_BITS = 22  # milliseconds since the record was written (about 70 minutes) in a token floor

DONE = "done"  # the step completed: its next record is in the log
TRIED = "tried"  # the attempt failed and its retry is scheduled


def ordinal(steps: int, retries: int) -> int:
    """Attempts of a machine in the order they happen: step by step, retry by retry."""
    return steps * RETRY_SLOTS + min(max(retries, 0), RETRY_SLOTS - 2)


def completed_ordinal(steps: int) -> int:
    """Above every attempt of step ``steps``: the mark of the step completed."""
    return steps * RETRY_SLOTS + RETRY_SLOTS - 1


def predecessor(steps: int, retries: int) -> int:
    """The mark a store holds once the attempt that wrote record ``(steps, retries)`` was handled:
    the attempt it retries, or the step before it completed; -1 for a start record."""
    if retries > 0:
        return ordinal(steps, retries - 1)
    return completed_ordinal(steps - 1) if steps > 0 else -1


def token_floor(steps: int, retries: int, elapsed_ms: int = 0) -> int:
    """The least token an attempt gets, whichever side issues it and whatever that side remembers.

    Later attempts have higher floors; within one attempt the floor rises with the time since its
    record was written, so a store that lost its counter (a restart, a flush, the other side of a
    failover) still issues a re-run a token above the earlier run's, to the millisecond.
    """
    attempt = (steps << ATTEMPT_BITS) + min(max(retries, 0), (1 << ATTEMPT_BITS) - 1)
    return ((attempt + 1) << TIME_BITS) + min(max(int(elapsed_ms), 0), (1 << TIME_BITS) - 1)


class StepKey(NamedTuple):
    """One record to admit; ``elapsed_ms`` since it was written raises its token floor."""

    cid: str
    steps: int
    retries: int
    elapsed_ms: int = 0

    @property
    def ordinal(self) -> int:
        return ordinal(self.steps, self.retries)

    @property
    def floor(self) -> int:
        return token_floor(self.steps, self.retries, self.elapsed_ms)


class StepView(NamedTuple):
    """What a store answers for one machine."""

    token: int | None  # the lease's fence token; None while another owner holds it (or for a peek)
    mark: int | None  # high-water ordinal of handled attempts; None: the store knows nothing of it
    aborted: bool
    side: str = "primary"  # which side of a failover pair answered
    proven: int | None = None  # the other side's mark: it can prove attempts handled, not that the store follows
    peeked: bool = True  # False: the other side could not be read, so ``mark`` may be stale


class Ending(NamedTuple):
    """How a record's lease is given back: with a mark (``DONE``, ``TRIED``) or none (nothing ran).

    ``steps``/``retries`` are the record's. ``last``/``last_retries``, when set, name a further
    attempt handled in the same invocation (a failure behind a ``local`` transition). ``token``
    None is a mark only (the other side of a failover pair), with no lease to release.
    """

    cid: str
    steps: int
    retries: int
    token: int | None
    mark: str | None
    last: int = -1
    last_retries: int = 0

    def handled_upto(self) -> int:
        """The high-water ordinal this ending marks (-1: none)."""
        if self.mark == DONE:
            return completed_ordinal(max(self.steps, self.last))
        if self.mark == TRIED:
            if self.last > self.steps:
                return ordinal(self.last, self.last_retries)
            return ordinal(self.steps, self.retries)
        return -1


@runtime_checkable
class StepCache(Protocol):
    """A cache that serves the step gate a batch at a time (SQLite, Redis, DynamoDB).

    A plain ``Cache`` (Memcached) serves it through ``ComposedSteps``.
    """

    name: str

    def begin_steps(self, items: Sequence[StepKey], owner: str, ttl_s: float) -> list[StepView]:
        """Take each machine's lease (re-entrant for ``owner``, with a new, larger token) and read its
        mark and abort flag."""
        ...

    def end_steps(self, items: Sequence[Ending], owner: str, dedupe_s: float) -> None:
        """Raise each machine's mark to ``handled_upto()`` (never lower it while it lives), THEN
        release the lease if ``(owner, token)`` still hold it. A stale holder's mark still counts."""
        ...

    def renew_leases(self, items: Sequence[tuple[str, int]], owner: str, ttl_s: float) -> list[bool]:
        """Extend each ``(cid, token)`` lease while its token is still the last one issued (even if it
        ran out meanwhile: nobody else held it in between); False where it was lost."""
        ...

    def check_leases(self, items: Sequence[tuple[str, int]], owner: str, ttl_s: float) -> list[bool]:
        """Whether each ``(cid, token)`` is still the last token issued for its machine (nobody acquired
        the lease since), read only: what a holder asks just before it appends."""
        ...

    def peek_steps(self, items: Sequence[StepKey]) -> list[StepView]:
        """Each record's machine's mark and abort flag, taking no lease (token None): the other side of a
        failover pair. A store that keeps flags per step (``ComposedSteps``) answers for the record."""
        ...

    def abort_machine(self, cid: str, dedupe_s: float) -> None: ...


def as_steps(cache: StepCache | Cache) -> StepCache:
    """The step gate's store for any cache: itself, or its basic calls composed (Memcached)."""
    if isinstance(cache, StepCache):
        return cache
    from .composed import ComposedSteps

    return ComposedSteps(cache)
