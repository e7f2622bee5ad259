"""The step gate's store over a primary and a secondary cache.

Every call goes to the primary first, every time: two workers that both reach the
primary always share its leases, so there is one holder at a time whenever one store
can decide. A failed call is tried again at once (twice); a primary that keeps failing
is not yet *down*: leases move to the secondary only once the primary has failed for
``CACHE_FAILOVER_SECONDS`` (1 s by default) without a single success in between. Until
then the batch is handed back and delivered again, because a lease taken on the
secondary while other workers still reach the primary would split it. Only a worker
that has lost the primary for that long takes leases on the secondary; that overlap (a
partition between the two sides) is counted per admission (``split``), logged, and
ordered by fence tokens, whose floors rise with the machine's steps and with time,
whichever side issues them.

Marks are read from both sides: a batch admitted on one side also peeks at the other, and the
answer carries both (``StepView.proven``). A mark on the other side can prove an attempt handled,
but only the admitting side's own mark says the store has followed the machine up to the record
in hand (a stale mark on the other side must not hide that the admitting side forgot); when the
other side cannot be read, nothing is known but what is proven handled. When the other side cannot be read,
the admission reports no knowledge (unless the side that answered knows the attempt was
handled), so the gate asks the log. Ends go to the side that admitted (mark, then
release) and the marks are copied to the other side, best effort.

Which side holds a lease this process took is remembered here until the lease ends:
that is this process's own state, never a decision another worker depends on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from eventlog.errors import BackendError, ServiceUnavailable
from eventlog.failover import FAILOVERS, SidePair

from .steps import Ending, StepCache, StepKey, StepView

log = logging.getLogger("fsmlog.failover")

PRIMARY, SECONDARY = "primary", "secondary"
TRIES = 3  # calls to one side before it counts as failed (transient faults are common)
DEFAULT_FAILOVER_AFTER_S = 1.0

T = TypeVar("T")


class FailoverSteps(SidePair):
    """``StepCache`` over two ``StepCache`` sides (see the module docstring)."""

    kind = "CACHE"

    def __init__(self, primary: StepCache, secondary: StepCache, *,
                 failover_after_s: float = DEFAULT_FAILOVER_AFTER_S,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.primary = primary
        self.secondary = secondary
        self.failover_after_s = failover_after_s
        self._clock = clock
        self._sleep = sleep
        self._down_since: float | None = None  # when the primary's current run of failures began
        self._held: dict[tuple[str, int], str] = {}  # (cid, token) -> side of a lease this process holds
        self._lock = threading.Lock()
        self.failovers = 0  # calls the secondary served because the primary failed
        self.split = 0  # leases taken on the secondary: holders the primary cannot order
        self.unverified = 0  # admissions whose other side could not be read
        self.handed_back = 0  # admissions refused: the primary failed, but not for long enough to move leases
        self.last_error: BaseException | None = None

    def _try(self, call: Callable[..., T], *args: object) -> T:
        """A call, tried again at once on failure (``TRIES`` in all, 10 ms then 20 ms apart)."""
        for attempt in range(TRIES):
            try:
                return call(*args)
            except BackendError:
                if attempt == TRIES - 1:
                    raise
                self._sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _primary_answered(self) -> None:
        with self._lock:
            self._down_since = None
        self._note_primary_ok()

    def _primary_down(self, exc: BaseException) -> bool:
        """Whether the primary has failed for long enough (and with no success since) to move leases."""
        now = self._clock()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
            self.last_error = exc
            return now - self._down_since >= self.failover_after_s

    def _side(self, side: str) -> StepCache:
        return self.primary if side == PRIMARY else self.secondary

    def _failed_over(self, exc: BaseException, what: str) -> None:
        with self._lock:
            self.failovers += 1
            self.last_error = exc
        FAILOVERS[self.kind] += 1
        log.debug("cache %s: %s on the secondary %s (%s)", self.primary.name, what, self.secondary.name, exc)
        self._note_failover(exc)  # one rate-limited warning line (``failovers`` is what the metrics count)

    # ---------------------------------------------------------------- admission

    def begin_steps(self, items: Sequence[StepKey], owner: str, ttl_s: float) -> list[StepView]:
        if not items:
            return []
        side, other = PRIMARY, SECONDARY
        try:
            views = self._try(self.primary.begin_steps, items, owner, ttl_s)
            self._primary_answered()
        except BackendError as first:
            if not self._primary_down(first):
                with self._lock:
                    self.handed_back += len(items)
                raise ServiceUnavailable(
                    f"cache {self.primary.name}: begin_steps failed ({first}); leases move to the secondary "
                    f"only once the primary has failed for {self.failover_after_s:g}s (CACHE_FAILOVER_SECONDS)"
                ) from first
            try:
                views = self._try(self.secondary.begin_steps, items, owner, ttl_s)
            except BackendError as second:
                raise _both_down("begin_steps", self, first, second) from second
            self._failed_over(first, f"{len(items)} lease(s) taken")
            side, other = SECONDARY, PRIMARY
        views = self._distinct(items, views, side, owner, ttl_s)
        with self._lock:
            for key, view in zip(items, views):
                if view.token is not None:
                    self._held[(key.cid, view.token)] = side
            if side == SECONDARY:
                self.split += sum(1 for v in views if v.token is not None)
        try:
            others = self._side(other).peek_steps(items)
        except BackendError:
            with self._lock:
                self.unverified += len(items)
            return [v._replace(side=side, peeked=False) for v in views]
        return [v._replace(aborted=v.aborted or o.aborted, side=side, proven=o.mark) for v, o in zip(views, others)]

    def _distinct(self, items: Sequence[StepKey], views: list[StepView], side: str, owner: str,
                  ttl_s: float) -> list[StepView]:
        """Both sides issue a record's floor as its first token, so a lease this process already holds on
        the other side may come back with the same token: take it once more (re-entrant, a larger token),
        so that ``(cid, token)`` names one lease on one side for its renewals and its release."""
        with self._lock:
            clash = [i for i, (k, v) in enumerate(zip(items, views))
                     if v.token is not None and self._held.get((k.cid, v.token), side) != side]
        if not clash:
            return views
        again = self._try(self._side(side).begin_steps, [items[i] for i in clash], owner, ttl_s)
        views = list(views)
        for i, view in zip(clash, again):
            views[i] = view
        return views

    def peek_steps(self, items: Sequence[StepKey]) -> list[StepView]:
        answers = []
        for side in (self.primary, self.secondary):
            try:
                answers.append(side.peek_steps(items))
            except BackendError:
                answers.append([StepView(None, None, False)] * len(items))
        return [_merged(a, b, PRIMARY) for a, b in zip(*answers)]

    # ---------------------------------------------------------------- leases

    def renew_leases(self, items: Sequence[tuple[str, int]], owner: str, ttl_s: float) -> list[bool]:
        """Each lease renewed on the side that took it. A side that cannot be asked raises: the keeper
        then goes by its own reckoning of the lease (a failed call is not a lost lease)."""
        held = [False] * len(items)
        for side, idx in self._by_side([(cid, token) for cid, token in items]).items():
            store = self._side(side)
            answers = self._try(store.renew_leases, [items[i] for i in idx], owner, ttl_s)
            for i, ok in zip(idx, answers):
                held[i] = ok
        return held

    def check_leases(self, items: Sequence[tuple[str, int]], owner: str, ttl_s: float) -> list[bool]:
        """Each lease checked on the side that took it (see ``renew_leases`` for a side that cannot be asked)."""
        held = [False] * len(items)
        for side, idx in self._by_side([(cid, token) for cid, token in items]).items():
            store = self._side(side)
            answers = self._try(store.check_leases, [items[i] for i in idx], owner, ttl_s)
            for i, ok in zip(idx, answers):
                held[i] = ok
        return held

    def end_steps(self, items: Sequence[Ending], owner: str, dedupe_s: float) -> None:
        if not items:
            return
        failed: list[BackendError] = []
        sides = self._by_side([(e.cid, e.token) for e in items])
        for side, idx in sides.items():
            group = [items[i] for i in idx]
            other = SECONDARY if side == PRIMARY else PRIMARY
            marks = [e._replace(token=None) for e in group if e.mark is not None]
            store = self._side(side)
            try:
                self._try(store.end_steps, group, owner, dedupe_s)
            except BackendError as exc:  # the marks must land somewhere; the lease expires by itself
                failed.append(exc)
                try:
                    self._try(self._side(other).end_steps, marks, owner, dedupe_s)
                except BackendError as again:
                    raise _both_down("end_steps", self, exc, again) from again
                continue
            if marks:  # a copy on the other side, so either side alone knows the step was handled
                try:
                    self._side(other).end_steps(marks, owner, dedupe_s)
                except BackendError:
                    pass
        with self._lock:
            for e in items:
                if e.token is not None:
                    self._held.pop((e.cid, e.token), None)

    def abort_machine(self, cid: str, dedupe_s: float) -> None:
        errors = []
        for side in (self.primary, self.secondary):
            try:
                side.abort_machine(cid, dedupe_s)
            except BackendError as exc:
                errors.append(exc)
        if len(errors) == 2:
            raise _both_down("abort_machine", self, errors[0], errors[1])

    def _by_side(self, pairs: Sequence[tuple[str, int | None]]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        with self._lock:
            for i, (cid, token) in enumerate(pairs):
                side = self._held.get((cid, token), PRIMARY) if token is not None else PRIMARY
                out.setdefault(side, []).append(i)
        return out


def _merged(view: StepView, other: StepView, side: str) -> StepView:
    marks = [m for m in (view.mark, other.mark) if m is not None]
    return StepView(view.token, max(marks) if marks else None, view.aborted or other.aborted, side)


def _both_down(what: str, pair: FailoverSteps, first: BaseException, second: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"cache source unavailable on both sides ({what}): primary {pair.primary.name} ({first}); "
        f"secondary {pair.secondary.name} ({second})"
    )
