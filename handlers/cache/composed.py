"""The step gate over a plain ``Cache`` (Memcached): leases and flags composed from basic calls.

Keys: ``lease:<cid>`` (the lease, with fence token), ``done:<cid>:<steps>`` (step
completed), ``tried:<cid>:<steps>:<retries>`` (attempt failed, retry scheduled) and
``abort:<cid>``. A plain cache keeps no high-water number, so the mark reported for a record is
the highest of: its step completed, the attempt itself handled, or the attempt that wrote it
handled (its predecessor) — enough for the gate to tell done, known and unknown.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import Cache
from .steps import DONE, TRIED, Ending, StepKey, StepView, completed_ordinal, ordinal, predecessor


def lease_key(cid: str) -> str:
    return f"lease:{cid}"


def done_key(cid: str, steps: int) -> str:
    return f"done:{cid}:{steps}"


def tried_key(cid: str, steps: int, retries: int) -> str:
    return f"tried:{cid}:{steps}:{retries}"


def abort_key(cid: str) -> str:
    return f"abort:{cid}"


class ComposedSteps:
    """``StepCache`` over any ``Cache``: several calls per record instead of one per batch."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.name = cache.name

    def _mark(self, key: StepKey) -> int | None:
        cid, steps, retries = key.cid, key.steps, key.retries
        if self.cache.marked(done_key(cid, steps)):
            return completed_ordinal(steps)
        if self.cache.marked(tried_key(cid, steps, retries)):
            return ordinal(steps, retries)
        if retries > 0 and self.cache.marked(tried_key(cid, steps, retries - 1)):
            return predecessor(steps, retries)
        if retries == 0 and self.cache.marked(done_key(cid, steps - 1)):  # done:<cid>:-1: registered
            return predecessor(steps, retries)
        return None

    def begin_steps(self, items: Sequence[StepKey], owner: str, ttl_s: float) -> list[StepView]:
        out = []
        for key in items:
            token = self.cache.acquire(lease_key(key.cid), owner, ttl_s, key.floor)
            if token is None:
                out.append(StepView(None, None, False))
                continue
            out.append(StepView(token, self._mark(key), self.cache.marked(abort_key(key.cid))))
        return out

    def peek_steps(self, items: Sequence[StepKey]) -> list[StepView]:
        """What this side's flags tell of each record, taking no lease.

        As the other side of a failover pair this is the proof that a record was handled there: a
        worker cut off from the primary ran the step on this side, and the primary's own flags (the
        step before it done) make the record look new. Answering by machine alone ("nothing known")
        let the step run again once the primary was back (the model test found it)."""
        return [StepView(None, self._mark(key), self.cache.marked(abort_key(key.cid))) for key in items]

    def end_steps(self, items: Sequence[Ending], owner: str, dedupe_s: float) -> None:
        for e in items:
            if e.mark == DONE or (e.mark == TRIED and e.last > e.steps):  # the record's own step completed
                self.cache.mark(done_key(e.cid, e.steps), dedupe_s)
                if e.mark == DONE and e.last > e.steps:
                    self.cache.mark(done_key(e.cid, e.last), dedupe_s)
                if e.mark == TRIED and e.last > e.steps + 1:  # a local chain completed the steps before it
                    self.cache.mark(done_key(e.cid, e.last - 1), dedupe_s)
            if e.mark == TRIED:
                failed = (e.last, e.last_retries) if e.last > e.steps else (e.steps, e.retries)
                self.cache.mark(tried_key(e.cid, *failed), dedupe_s)
            if e.token is not None:  # release after mark: no window in which a copy finds neither
                self.cache.release(lease_key(e.cid), owner, e.token)

    def renew_leases(self, items: Sequence[tuple[str, int]], owner: str, ttl_s: float) -> list[bool]:
        return [self.cache.extend(lease_key(cid), owner, token, ttl_s) for cid, token in items]

    def check_leases(self, items: Sequence[tuple[str, int]], owner: str, ttl_s: float) -> list[bool]:
        """A plain cache cannot read its fence counters: renewing tells the same (it fails once another
        owner acquired)."""
        return self.renew_leases(items, owner, ttl_s)

    def abort_machine(self, cid: str, dedupe_s: float) -> None:
        self.cache.mark(abort_key(cid), dedupe_s)
