"""The step gate: a machine's lease, its handled mark and its abort flag, checked against the log.

What must never happen twice is a *handled attempt*: a step that completed
(its next record appended) or an attempt that failed and scheduled its retry.
A redelivered copy of either is skipped; the retry record itself (``retries``
+ 1) is a new attempt and runs.

The cache (``handlers.cache.steps.StepCache``) keeps per machine a high-water mark of
handled attempts, ordered by ``ordinal(steps, retries)``; a completed step marks
``completed_ordinal(steps)``, above every attempt of it. One number suffices because a
machine only moves forward.

The cache is an accelerator, not the authority: it may have forgotten (evicted, flushed,
restarted), or be the side of a failover pair that never saw the machine. So the mark is
trusted only when it reaches the attempt that wrote the record in hand (its *predecessor*):
then the store has followed the machine up to here. Otherwise the store has *no knowledge*,
and the gate asks the log — the machine's snapshot, then the log tail after it, on every
side of the stream (``handlers.authority``) — before it runs or skips the record. A start
record is no exception: a store that knows nothing of a machine cannot tell a new one from
one it forgot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from eventlog.errors import BackendError
from eventlog.event import Event

from .cache import Cache
from .cache.composed import lease_key
from .cache.steps import (
    DONE,
    RETRY_SLOTS,
    TRIED,
    Ending,
    StepCache,
    StepKey,
    StepView,
    as_steps,
    completed_ordinal,
    ordinal,
    predecessor,
)

__all__ = ["DONE", "TRIED", "RETRY_SLOTS", "Admission", "Ending", "Gate", "completed_ordinal", "lease_key",
           "ordinal"]

# the last record the log holds of each machine (None: the log knows nothing of it)
Authority = Callable[[Sequence[str]], Mapping[str, Event | None]]


class Admission(NamedTuple):
    token: int | None  # fence token, None when the lease is held elsewhere
    done: bool  # this attempt (or its whole step) was handled already: skip it
    aborted: bool  # the machine was aborted: run nothing more
    known: bool = True  # False: the store knew nothing of the machine and the log could not be asked
    side: str = "primary"  # which side of a failover cache took the lease
    upto: Ending | None = None  # what the log showed handled, to mark on the store when it forgot


class Gate:
    def __init__(self, cache: StepCache | Cache, owner: str, lease_s: float, dedupe_s: float,
                 authority: Authority | None = None):
        self.store = as_steps(cache)
        self.owner = owner
        self.lease_s = lease_s
        self.dedupe_s = dedupe_s
        self.authority = authority
        self.verified = 0  # admissions the log decided because the store knew nothing

    # ---------------------------------------------------------------- admission

    def begin(self, cid: str, steps: int, retries: int = 0, elapsed_ms: int = 0) -> Admission:
        return self.begin_many([(cid, steps, retries, elapsed_ms)])[0]

    def begin_many(self, items: Sequence[tuple[str, int, int] | tuple[str, int, int, int]]) -> list[Admission]:
        """Admit ``(cid, steps, retries[, elapsed_ms])`` records in one round trip; where the store knew nothing
        of a machine, ask the log (one read per such machine). Records of one machine share its
        lease and token."""
        if not items:
            return []
        keys = [StepKey(*i) for i in items]
        # one lease per machine: a second acquisition would supersede the first one's token
        first: dict[str, StepKey] = {}
        for k in keys:
            if k.cid not in first or k.floor > first[k.cid].floor:
                first[k.cid] = k
        leases = list(first.values())
        views = dict(zip((k.cid for k in leases), self.store.begin_steps(leases, self.owner, self.lease_s)))
        admissions = [_admission(k, views[k.cid]) for k in keys]
        return self._verify(keys, admissions)

    def _verify(self, keys: list[StepKey], admissions: list[Admission]) -> list[Admission]:
        doubt = sorted({k.cid for k, a in zip(keys, admissions) if a.token is not None and not a.known})
        if not doubt or self.authority is None:
            return admissions
        last: dict[str, Event | None] = {}
        for cid in doubt:  # one machine at a time: a failing read costs that machine's verdict only
            try:
                last.update(self.authority([cid]))
            except BackendError:  # no verdict: its records stay unknown and are handed back, never run blind
                continue
        self.verified += len(last)
        return [a if a.token is None or a.known or k.cid not in last else _decided(k, a, last[k.cid])
                for k, a in zip(keys, admissions)]

    def superseded(self, cid: str, steps: int, retries: int) -> bool | None:
        """Whether the log already holds a later record of the machine than attempt ``(steps, retries)``
        (None: the log cannot be read). Holders of split leases ask before they run and before they
        append, since no cache can order them against the primary's holders."""
        if self.authority is None:
            return False
        try:
            last = self.authority([cid]).get(cid)
        except BackendError:
            return None
        return last is not None and (last.terminal or ordinal(last.steps, last.retries) > ordinal(steps, retries))

    # ---------------------------------------------------------------- leases

    def renew(self, held: Sequence[tuple[str, int]]) -> list[bool]:
        """Extend leases this worker holds; False for each one it lost (expired, taken over)."""
        return self.store.renew_leases(list(held), self.owner, self.lease_s) if held else []

    def check(self, held: Sequence[tuple[str, int]]) -> list[bool]:
        """Whether each lease is still this worker's (no acquisition since), read only: before the append."""
        return self.store.check_leases(list(held), self.owner, self.lease_s) if held else []

    def end(self, cid: str, steps: int, token: int, done: bool, *, retries: int = 0, tried: bool = False) -> None:
        """Give the lease back, marking the step completed (``done``) or the attempt handled (``tried``)."""
        self.store.end_steps([Ending(cid, steps, retries, token, DONE if done else TRIED if tried else None)],
                             self.owner, self.dedupe_s)

    def end_many(self, items: Sequence[Ending]) -> list[BackendError]:
        """Mark every item, then release its lease (one round trip where the store can batch).

        A failed batch call is retried item by item, so one bad mark does not keep every
        other machine of the batch waiting for its lease to expire; a lease that still
        cannot be given back expires by itself. Returns the errors of the items that failed.
        """
        if not items:
            return []
        try:
            self.store.end_steps(list(items), self.owner, self.dedupe_s)
            return []
        except BackendError:
            pass
        errors = []
        for e in items:
            try:
                self.store.end_steps([e], self.owner, self.dedupe_s)
            except BackendError as exc:
                errors.append(exc)
        return errors

    def register(self, cids: Sequence[str]) -> None:
        """Mark new machines known with nothing handled (``completed_ordinal(-1)`` is -1), so their start
        records are admitted without a log read."""
        if cids:
            self.store.end_steps([Ending(cid, -1, 0, None, DONE) for cid in cids], self.owner, self.dedupe_s)

    def release(self, cid: str, token: int) -> None:
        self.store.end_steps([Ending(cid, -1, 0, token, None)], self.owner, self.dedupe_s)

    def abort(self, cid: str) -> None:
        self.store.abort_machine(cid, self.dedupe_s)


def _admission(key: StepKey, view: StepView) -> Admission:
    if view.token is None:
        return Admission(None, False, False, True, view.side)
    marks = [m for m in (view.mark, view.proven) if m is not None]
    done = bool(marks) and key.ordinal <= max(marks)
    # only the answering side's own mark says the store followed the machine up to this record, and only
    # when the other side was read too (else it may have moved the machine on)
    known = view.peeked and view.mark is not None and view.mark >= predecessor(key.steps, key.retries)
    return Admission(view.token, done, view.aborted, done or known, view.side)


def _decided(key: StepKey, adm: Admission, last: Event | None) -> Admission:
    """The log's answer for a record the store knew nothing of: handled when the log holds a later
    record of the machine (or its end); else it runs."""
    if last is None:
        return adm._replace(known=True)
    ahead = last.terminal or ordinal(last.steps, last.retries) > key.ordinal
    if not ahead:
        return adm._replace(known=True)
    if last.terminal:
        upto = Ending(key.cid, last.steps, 0, adm.token, DONE)
    elif last.retries > 0:
        upto = Ending(key.cid, last.steps, last.retries - 1, adm.token, TRIED)
    else:
        upto = Ending(key.cid, last.steps - 1, 0, adm.token, DONE)
    return adm._replace(done=True, known=True, upto=upto)
