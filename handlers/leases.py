"""Keeping a batch's leases alive while its actions run, and knowing which were lost.

A batch takes every lease it needs at its start and gives them back at its commit. In
between, actions may run for longer than a lease lasts (a slow gateway), so a keeper renews
every lease the batch holds: from a thread every third of a lease, and from the engine
between records (which is what moves an injected clock). Before the commit appends
anything, ``confirm`` renews once more: a lease the store says is gone (expired, taken over,
forgotten) was lost, and the holder must not append that step's outcome.

When the store cannot be asked (an outage), a lease counts as held while the holder's own
reckoning says it has not expired: its last successful take or renewal plus the lease, less a
margin for clock skew.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from eventlog.errors import BackendError

from .gate import Gate

log = logging.getLogger("fsmlog.leases")

SKEW_SHARE = 0.2  # of a lease: how early a holder stops trusting its own reckoning


class LeaseKeeper:
    """The leases of one batch, one per machine: the latest token this worker took for it."""

    def __init__(self, gate: Gate, clock: Callable[[], float], *, thread: bool = True) -> None:
        self.gate = gate
        self.clock = clock
        self.every_s = gate.lease_s / 3
        self._held: dict[str, int] = {}  # machine -> the latest token we took for it
        self._until: dict[str, float] = {}  # machine -> when its lease runs out, by our own reckoning
        self._lost: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._last = clock()
        self._use_thread = thread
        self.renewals = 0
        self._renewed: Counter[str] = Counter()  # machine -> renewals the store confirmed

    def __enter__(self) -> LeaseKeeper:
        if self._use_thread:
            Renewer.of(self.gate).watch(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def hold(self, cid: str, token: int, since: float | None = None) -> None:
        """We took ``token`` for ``cid`` (a re-entrant take supersedes our earlier token for it)."""
        with self._lock:
            self._held[cid] = token
            self._until[cid] = (self.clock() if since is None else since) + self.gate.lease_s

    def lost(self, cid: str, token: int) -> bool:
        """Whether work done under ``token`` may have overlapped another holder: the token, or the
        token that superseded it, was lost."""
        with self._lock:
            return (cid, token) in self._lost or (cid, self._held.get(cid, token)) in self._lost

    def tick(self) -> None:
        """Renew when a third of a lease went by since the last renewal (by the engine's clock)."""
        if self.clock() - self._last >= self.every_s:
            self.renew()

    def renew(self, ask: Callable[[Sequence[tuple[str, int]]], list[bool]] | None = None) -> None:
        """Renew every lease held (or, with ``ask``, only ask whether each is still ours)."""
        with self._lock:
            pairs = [p for p in self._held.items() if p not in self._lost]
        self._last = now = self.clock()
        if not pairs:
            return
        try:
            answers: list[bool | None] = list((ask or self.gate.renew)(pairs))
        except BackendError as exc:
            log.warning("asking after %d lease(s) failed: %s", len(pairs), exc)
            answers = [None] * len(pairs)
        with self._lock:
            for (cid, token), held in zip(pairs, answers):
                if held is True:
                    self._until[cid] = now + self.gate.lease_s
                    self.renewals += 1
                    if ask is None:  # a renewal, not the commit's read
                        self._renewed[cid] += 1
                elif held is False:
                    self._lost.add((cid, token))
                elif self._until.get(cid, 0.0) - self.gate.lease_s * SKEW_SHARE <= now:
                    self._lost.add((cid, token))  # cannot ask, and by our own reckoning it may have run out

    def confirm(self, pairs: Sequence[tuple[str, int]]) -> set[tuple[str, int]]:
        """Stop renewing (the commit releases the leases next), ask once more whether each lease is still
        ours — a read, not a renewal — and return which of ``pairs`` were lost."""
        self.stop()
        self.renew(ask=self.gate.check)
        return {p for p in pairs if self.lost(*p)}

    def renewed(self) -> dict[str, int]:
        """Per machine, the renewals that extended its lease (the commit's last check is not one)."""
        with self._lock:
            return dict(self._renewed)

    def stop(self) -> None:
        """No renewal after this returns (a renewal in flight finishes first)."""
        if self._use_thread:
            Renewer.of(self.gate).unwatch(self)


class Renewer:
    """One thread for the process that renews the leases of every batch in progress every third of a
    lease, so an action longer than a lease keeps its lease (a thread per batch would cost its start
    and join every batch)."""

    _instance: Renewer | None = None
    _made = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._due: dict[LeaseKeeper, float] = {}  # keeper -> next renewal (time.monotonic)
        self._busy: LeaseKeeper | None = None
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._loop, name="fsmlog-lease-renewer", daemon=True)
        self._thread.start()

    @classmethod
    def of(cls, gate: Gate) -> Renewer:
        with cls._made:
            if cls._instance is None or cls._instance._pid != os.getpid():  # a forked child has no thread
                cls._instance = cls()
            return cls._instance

    def watch(self, keeper: LeaseKeeper) -> None:
        with self._lock:
            self._due[keeper] = time.monotonic() + keeper.every_s
            self._lock.notify()

    def unwatch(self, keeper: LeaseKeeper) -> None:
        """Stop renewing ``keeper``; waits for a renewal of it in flight."""
        with self._lock:
            self._due.pop(keeper, None)
            while self._busy is keeper:
                self._lock.wait()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._due:
                    self._lock.wait()
                keeper, due = min(self._due.items(), key=lambda kv: kv[1])
                wait = due - time.monotonic()
                if wait > 0:
                    self._lock.wait(wait)
                    continue
                self._due[keeper] = time.monotonic() + keeper.every_s
                self._busy = keeper
            try:
                keeper.renew()
            except Exception:  # noqa: BLE001 - the renewer must never die
                log.exception("lease renewer")
            finally:
                with self._lock:
                    self._busy = None
                    self._lock.notify_all()
