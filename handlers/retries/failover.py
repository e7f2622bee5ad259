"""A retry source with a secondary: retries written to either side are run, and removed from that side only.

``schedule`` goes to the primary; when it raises ``BackendError`` (which includes
``ServiceUnavailable`` and injected ``ChaosError``) the same retries go to the
secondary, the failover is counted, and the primary is skipped for ``cooldown_s``
(``FAILOVER_COOLDOWN_SECONDS``) so an outage costs one failed call per cool-down.
Both sides down: ``ServiceUnavailable`` naming both.

``due`` asks both sides, every time: a retry scheduled on the secondary during an
outage is still run once the primary answers again. The limit is shared (the side
asked first alternates, and a side with fewer due gives its share to the other),
so no side claims more than is returned; the answers are merged by due time. A
side that fails is skipped while the other answers (both failing:
``ServiceUnavailable``); while the primary's cool-down runs it is asked only if the
secondary fails.

Each returned handle names its side (``RetryHandle``, a ``str`` of the form
``primary:<handle>`` / ``secondary:<handle>``), and ``done`` deletes each handle on
its own side only: a row id of one side never deletes a row of the other. A
delete that fails is kept and tried again on the next ``due`` or ``done`` (its
retry is not handed out again by this process meanwhile); a process that dies
first leaves the row to come back when its claim runs out (at-least-once: the
step gate runs a completed step only once). A handle that names no side (not
from this store) is ignored with a warning rather than guessed at.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from eventlog.errors import BackendError, ServiceUnavailable
from eventlog.failover import (  # FAILOVERS: per source kind in this process, every proxy
    FAILOVERS,
    CircuitPair,
)
from eventlog.settings import Settings

from . import DueRetry, ListedRetries, ScheduledRetry, WaitingRetries

log = logging.getLogger("fsmlog.retries")

KIND = "RETRY"
SIDES = ("primary", "secondary")
DEFAULT_COOLDOWN_S = 30.0
_PENDING_MAX = 100_000  # failed deletes remembered per side, oldest forgotten first


class RetryHandle(str):
    """A retry handle that names the side it came from: ``"<side>:<the side's own handle>"``.

    It is a plain ``str`` (what the engine and dead-letter store expect), so it survives
    being passed around as text; ``side`` and ``raw`` read it back.
    """

    __slots__ = ()

    @classmethod
    def of(cls, side: str, raw: str) -> RetryHandle:
        if side not in SIDES:
            raise ValueError(f"retry handle side must be one of {SIDES}, got {side!r}")
        return cls(f"{side}:{raw}")

    @property
    def side(self) -> str:
        return self.partition(":")[0]

    @property
    def raw(self) -> str:
        return self.partition(":")[2]


def parse_handle(handle: str) -> tuple[str, str] | None:
    """``(side, raw)`` of a handle from ``FailoverRetries.due``, None if it names no side."""
    side, sep, raw = str(handle).partition(":")
    if not sep or side not in SIDES:
        return None
    return side, raw


class FailoverRetries(CircuitPair):
    """RetryStore over a primary and a secondary (see the module docstring)."""

    def __init__(self, primary: Any, secondary: Any, *, cooldown_s: float = DEFAULT_COOLDOWN_S,
                 clock: Callable[[], float] = time.monotonic, kind: str = KIND) -> None:
        super().__init__(kind, primary, secondary, cooldown_s=cooldown_s, clock=clock)
        self._turn = 0  # which side ``due`` asks first
        self._pending: dict[str, OrderedDict[str, None]] = {side: OrderedDict() for side in SIDES}

    # --- plumbing --------------------------------------------------------------------------------

    def side(self, name: str) -> Any:
        if name not in SIDES:
            raise ValueError(f"no retry side {name!r}")
        return self.primary if name == "primary" else self.secondary

    @property
    def pending_done(self) -> int:
        """Deletes that failed and wait to be tried again."""
        with self._lock:
            return sum(len(p) for p in self._pending.values())

    def pending(self) -> int:
        """How many retries wait on both sides (for the CLI and tests; both sides must count)."""
        return int(self.primary.pending()) + int(self.secondary.pending())

    def next_due(self) -> float | None:
        """The earliest due time of a retry waiting on either side that can tell (None: none waits)."""
        dues = (side.next_due() for side in (self.primary, self.secondary) if isinstance(side, WaitingRetries))
        return min((d for d in dues if d is not None), default=None)

    def scheduled(self) -> list[ScheduledRetry]:
        """What waits on either side that can list it, earliest first (for the CLI)."""
        sides = (side.scheduled() for side in (self.primary, self.secondary) if isinstance(side, ListedRetries))
        return sorted((r for listed in sides for r in listed), key=lambda r: r.due)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_") or attr in ("primary", "secondary"):  # unset while unpickling
            raise AttributeError(attr)
        return getattr(self.primary, attr)

    def _failed_over(self, error: object = None) -> None:
        with self._lock:
            self.failovers += 1
            FAILOVERS[self.kind] += 1
        self._note_failover(error)

    def _unavailable(self, what: str, errors: dict[str, BaseException]) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"{self.kind.lower()} source unavailable on both sides ({what}): primary {self.primary.name} "
            f"({errors.get('primary', 'not asked')}); secondary {self.secondary.name} "
            f"({errors.get('secondary', 'not asked')})"
        )

    # --- RetryStore ------------------------------------------------------------------------------

    def schedule(self, retries: Sequence[ScheduledRetry]) -> None:
        if not retries:
            return
        order = ["secondary", "primary"] if self.circuit_open else ["primary", "secondary"]
        errors: dict[str, BaseException] = {}
        for side in order:
            try:
                self.side(side).schedule(retries)
            except BackendError as exc:
                errors[side] = exc
                self._trip(side, exc)
                continue
            self.served[side] += 1
            if side == "secondary":
                self._failed_over(errors.get("primary"))
            else:
                self._note_primary_ok()
            return
        raise self._unavailable("schedule", errors) from errors[order[-1]]

    def due(self, now: float, limit: int) -> list[DueRetry]:
        limit = int(limit)
        if limit <= 0:
            return []
        with self._lock:
            first = SIDES[self._turn % 2]
            self._turn += 1
        order = [first, SIDES[1 - SIDES.index(first)]]
        held_back: list[str] = []  # not asked while its cool-down runs, unless the other fails
        if self.circuit_open:
            order.remove("primary")
            held_back.append("primary")

        got: dict[str, list[DueRetry]] = {}
        asked: dict[str, int] = {}  # per side: how many asked for, and how many it returned
        returned: dict[str, int] = {}
        errors: dict[str, BaseException] = {}

        def ask(side: str, n: int) -> None:
            self._flush(side)
            try:
                items = self.side(side).due(now, n)
            except BackendError as exc:
                errors[side] = exc
                self._trip(side, exc)
                return
            asked[side] = asked.get(side, 0) + n
            returned[side] = returned.get(side, 0) + len(items)
            with self._lock:  # a retry whose delete failed is not handed out again (checked now: a
                pending = self._pending[side]  # later flush may clear it after deleting the row)
                kept = [item for item in items if item.handle not in pending]
            got.setdefault(side, []).extend(kept)

        shares = [limit - limit // 2, limit // 2] if len(order) == 2 else [limit]
        for side, share in zip(order, shares):
            if share:
                ask(side, share)
        for side in order + held_back:  # the rest of the limit: from a side that may have more
            rest = limit - sum(len(v) for v in got.values())
            if rest <= 0:
                break
            if side in errors or (side in asked and returned[side] < asked[side]):
                continue  # down, or drained
            if side in held_back and not all(s in errors for s in order):
                continue
            ask(side, rest)

        if not got:
            if errors:
                raise self._unavailable("due", errors) from next(iter(errors.values()))
            return []
        for side in got:
            self.served[side] += 1
        if "primary" in errors or ("primary" in held_back and "primary" not in got):
            self._failed_over(errors.get("primary"))  # the secondary answered instead of the primary
        elif "primary" in got:
            self._note_primary_ok()
        merged: list[tuple[float, int, DueRetry]] = []
        for side, items in got.items():
            for item in items:
                tagged = item._replace(handle=RetryHandle.of(side, item.handle))
                when = item.due if item.due is not None else float("inf")
                merged.append((when, len(merged), tagged))
        merged.sort(key=lambda t: (t[0], t[1]))
        return [item for _, _, item in merged[:limit]]

    def done(self, handles: Sequence[str]) -> None:
        groups: dict[str, list[str]] = {side: [] for side in SIDES}
        for handle in handles:
            parsed = parse_handle(handle)
            if parsed is None:
                log.warning("retry handle %r names no side of %s; not deleted (it comes back when its claim "
                            "runs out)", handle, self.name)
                continue
            groups[parsed[0]].append(parsed[1])
        for side, raws in groups.items():
            if raws:
                self._delete(side, list(dict.fromkeys(raws)))

    # --- deletes that failed ---------------------------------------------------------------------

    def _delete(self, side: str, raws: list[str]) -> bool:
        try:
            self.side(side).done(raws)
        except BackendError as exc:
            self._trip(side, exc)
            with self._lock:
                pending = self._pending[side]
                for raw in raws:
                    pending[raw] = None
                    pending.move_to_end(raw)
                while len(pending) > _PENDING_MAX:
                    pending.popitem(last=False)
            log.warning("%d retr(ies) not removed from the %s retry source %s (%s); tried again later",
                        len(raws), side, self.side(side).name, exc)
            return False
        with self._lock:
            pending = self._pending[side]
            for raw in raws:
                pending.pop(raw, None)
        return True

    def _flush(self, side: str) -> None:
        with self._lock:
            raws = list(self._pending[side])
        if raws:
            self._delete(side, raws)


def with_retry_failover(primary: Any, secondary: Any, settings: Settings | None, *,
                        clock: Callable[[], float] = time.monotonic) -> FailoverRetries:
    """A ``FailoverRetries`` with the cool-down of ``FAILOVER_COOLDOWN_SECONDS``."""
    cooldown = DEFAULT_COOLDOWN_S
    if settings is not None:
        cooldown = float(settings.FAILOVER_COOLDOWN_SECONDS or DEFAULT_COOLDOWN_S)
    return FailoverRetries(primary, secondary, cooldown_s=cooldown, clock=clock)
