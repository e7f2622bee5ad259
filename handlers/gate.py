"""The step gate: a machine's lease, its idempotency flags and its abort flag, over any ``Cache``.

Keys: ``lease:<cid>`` (the lease, with fence token), ``done:<cid>:<steps>``
(set once the step's next record is appended), ``abort:<cid>`` (set by
``fsmlog abort``). A cache may offer the fast path — ``begin_step(cid, steps,
owner, ttl_s) -> (token|None, done, aborted)``, ``end_step(cid, steps, owner,
token, done, dedupe_s)`` and ``abort_machine(cid, dedupe_s)`` — doing the same
in one round trip each; otherwise the gate composes them from the basic
``Cache`` calls (three calls to begin, two to end). A cache that can also do a
whole batch in one round trip — ``begin_steps(items, owner, ttl_s)`` and
``end_steps(items, owner, dedupe_s)`` — lets the engine admit every record of
a batch at once and close them all at once (the embedded file: two
transactions per batch instead of two per step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from eventlog.errors import BackendError

from .cache import Cache


class Admission(NamedTuple):
    token: int | None  # fence token, None when the lease is held elsewhere
    done: bool  # this step already ran to completion: skip it
    aborted: bool  # the machine was aborted: run nothing more


def lease_key(cid: str) -> str:
    return f"lease:{cid}"


def done_key(cid: str, steps: int) -> str:
    return f"done:{cid}:{steps}"


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

    def begin(self, cid: str, steps: int) -> Admission:
        if self._fast:
            token, done, aborted = self.cache.begin_step(cid, steps, self.owner, self.lease_s)
            return Admission(token, done, aborted)
        token = self.cache.acquire(lease_key(cid), self.owner, self.lease_s)
        if token is None:
            return Admission(None, False, False)
        if self.cache.marked(done_key(cid, steps)):
            return Admission(token, True, False)
        return Admission(token, False, self.cache.marked(abort_key(cid)))

    def end(self, cid: str, steps: int, token: int, done: bool) -> None:
        """Record the step as done (when it is) and give the lease back."""
        if self._fast:
            self.cache.end_step(cid, steps, self.owner, token, done, self.dedupe_s)
            return
        if done:
            self.cache.mark(done_key(cid, steps), self.dedupe_s)
        self.cache.release(lease_key(cid), self.owner, token)

    def begin_many(self, items: Sequence[tuple[str, int]]) -> list[Admission] | None:
        """Admit ``(cid, steps)`` items in one round trip, or ``None`` when the cache cannot batch
        (the engine then admits each record just before running it)."""
        if not self.batches or not items:
            return None
        return [Admission(*a) for a in self.cache.begin_steps(list(items), self.owner, self.lease_s)]

    def end_many(self, items: Sequence[tuple[str, int, int, bool]]) -> list[BackendError]:
        """End ``(cid, steps, token, done)`` items; returns the errors of the ones that failed
        (their leases expire by themselves)."""
        if not items:
            return []
        if self.batches:
            try:
                self.cache.end_steps(list(items), self.owner, self.dedupe_s)
            except BackendError as exc:  # reported to the caller, which logs and counts it
                return [exc]
            return []
        errors = []
        for cid, steps, token, done in items:
            try:
                self.end(cid, steps, token, done)
            except BackendError as exc:
                errors.append(exc)
        return errors

    def release(self, cid: str, token: int) -> None:
        self.end(cid, -1, token, False)

    def abort(self, cid: str) -> None:
        if self._fast:
            self.cache.abort_machine(cid, self.dedupe_s)
        else:
            self.cache.mark(abort_key(cid), self.dedupe_s)
