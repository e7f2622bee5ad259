"""The step gate: a machine's lease, its idempotency marks and its abort flag, over any ``Cache``.

What must never happen twice is a *handled attempt*: a step that completed
(its next record appended) or an attempt that failed and scheduled its retry.
A redelivered copy of either is skipped; the retry record itself (``retries``
+ 1) is a new attempt and runs.

Fast path. A cache may offer ``begin_step(cid, ordinal, owner, ttl_s) ->
(token|None, done, aborted)``, ``end_step(cid, ordinal, owner, token, mark,
dedupe_s)`` and ``abort_machine(cid, dedupe_s)``, one round trip each, keeping
per machine a high-water mark of handled attempts: ``begin_step`` reports
``done`` when ``ordinal <= mark``, ``end_step`` raises the mark to ``ordinal``
when ``mark`` is true and releases the lease if ``(owner, token)`` still hold
it. Attempts are ordered by ``ordinal(steps, retries)``; a completed step
marks ``completed_ordinal(steps)``, above every attempt of it, so a
redispatched copy of a completed step (``retries`` + 1) is skipped too. One
number suffices because a machine only moves forward: once step n completed,
every record at step <= n is history. A cache that can also do a whole batch
in one round trip — ``begin_steps(items, owner, ttl_s)``,
``end_steps(items, owner, dedupe_s)`` — lets the engine admit every record of
a batch at once and close them all at once (the embedded file: two
transactions per batch instead of two per step).

Composed path (any ``Cache``, e.g. Memcached): keys ``lease:<cid>`` (the lease,
with fence token), ``done:<cid>:<steps>`` (step completed),
``tried:<cid>:<steps>:<retries>`` (attempt failed, retry scheduled) and
``abort:<cid>``: four calls to begin, two to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from eventlog.errors import BackendError

from .cache import Cache

RETRY_SLOTS = 1 << 20  # attempts per step an ordinal can tell apart

DONE = "done"  # the step completed: its next record is in the log
TRIED = "tried"  # the attempt failed and its retry is scheduled


class Admission(NamedTuple):
    token: int | None  # fence token, None when the lease is held elsewhere
    done: bool  # this attempt (or its whole step) was handled already: skip it
    aborted: bool  # the machine was aborted: run nothing more


class Ending(NamedTuple):
    """How a record's lease is given back: with a mark (``DONE``, ``TRIED``) or none (nothing ran).

    ``steps``/``retries`` are the record's. A record can carry the machine further than its own
    step through ``local`` transitions: ``last``/``last_retries`` then name the furthest attempt
    handled — for ``DONE`` the last step completed, for ``TRIED`` the attempt that failed — and
    everything up to it counts as handled.
    """

    cid: str
    steps: int
    retries: int
    token: int
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


def ordinal(steps: int, retries: int) -> int:
    return steps * RETRY_SLOTS + min(max(retries, 0), RETRY_SLOTS - 2)


def completed_ordinal(steps: int) -> int:
    return steps * RETRY_SLOTS + RETRY_SLOTS - 1


def lease_key(cid: str) -> str:
    return f"lease:{cid}"


def done_key(cid: str, steps: int) -> str:
    return f"done:{cid}:{steps}"


def tried_key(cid: str, steps: int, retries: int) -> str:
    return f"tried:{cid}:{steps}:{retries}"


def abort_key(cid: str) -> str:
    return f"abort:{cid}"


class Gate:
    def __init__(self, cache: Cache, owner: str, lease_s: float, dedupe_s: float):
        self.cache = cache
        self.owner = owner
        self.lease_s = lease_s
        self.dedupe_s = dedupe_s
        self._fast = all(hasattr(cache, m) for m in ("begin_step", "end_step", "abort_machine"))
        self.batches = self._fast and all(hasattr(cache, m) for m in ("begin_steps", "end_steps"))

    def begin(self, cid: str, steps: int, retries: int = 0) -> Admission:
        if self._fast:
            token, done, aborted = self.cache.begin_step(cid, ordinal(steps, retries), self.owner, self.lease_s)
            return Admission(token, done, aborted)
        token = self.cache.acquire(lease_key(cid), self.owner, self.lease_s)
        if token is None:
            return Admission(None, False, False)
        if self.cache.marked(done_key(cid, steps)) or self.cache.marked(tried_key(cid, steps, retries)):
            return Admission(token, True, False)
        return Admission(token, False, self.cache.marked(abort_key(cid)))

    def begin_many(self, items: Sequence[tuple[str, int, int]]) -> list[Admission] | None:
        """Admit ``(cid, steps, retries)`` items in one round trip, or ``None`` when the cache cannot
        batch (the engine then admits each record just before running it)."""
        if not self.batches or not items:
            return None
        batch = [(cid, ordinal(steps, retries)) for cid, steps, retries in items]
        return [Admission(*a) for a in self.cache.begin_steps(batch, self.owner, self.lease_s)]

    def end(self, cid: str, steps: int, token: int, done: bool, *, retries: int = 0, tried: bool = False) -> None:
        """Give the lease back, marking the step completed (``done``) or the attempt handled (``tried``)."""
        self._end(Ending(cid, steps, retries, token, DONE if done else TRIED if tried else None))

    def _end(self, e: Ending) -> None:
        if self._fast:
            self.cache.end_step(e.cid, e.handled_upto(), self.owner, e.token, e.mark is not None, self.dedupe_s)
            return
        if e.mark == DONE or (e.mark == TRIED and e.last > e.steps):  # the record's own step completed
            self.cache.mark(done_key(e.cid, e.steps), self.dedupe_s)
        if e.mark == TRIED:
            failed = (e.last, e.last_retries) if e.last > e.steps else (e.steps, e.retries)
            self.cache.mark(tried_key(e.cid, *failed), self.dedupe_s)
        self.cache.release(lease_key(e.cid), self.owner, e.token)

    def end_many(self, items: Sequence[Ending]) -> list[BackendError]:
        """End every item; returns the errors of those that failed.

        A failed batch call is retried item by item, so one bad mark does not keep every
        other machine of the batch waiting for its lease to expire; a lease that still
        cannot be given back expires by itself.
        """
        if not items:
            return []
        if self.batches:
            try:
                self.cache.end_steps(
                    [(e.cid, e.handled_upto(), e.token, e.mark is not None) for e in items], self.owner, self.dedupe_s
                )
                return []
            except BackendError:
                pass  # item by item below
        errors = []
        for e in items:
            try:
                self._end(e)
            except BackendError as exc:
                errors.append(exc)
                if e.mark is not None:  # at least let the machine's next step run elsewhere
                    try:
                        self._end(e._replace(mark=None))
                    except BackendError:
                        pass
        return errors

    def release(self, cid: str, token: int) -> None:
        self._end(Ending(cid, -1, 0, token, None))

    def abort(self, cid: str) -> None:
        if self._fast:
            self.cache.abort_machine(cid, self.dedupe_s)
        else:
            self.cache.mark(abort_key(cid), self.dedupe_s)
