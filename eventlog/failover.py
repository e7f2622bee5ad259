"""Primary/secondary failover for the stream, checkpoint, environment, metrics and dead-letter
sources, with a circuit breaker.

Each call goes to the primary. When it raises ``BackendError`` (which includes
``ServiceUnavailable`` and injected ``ChaosError``; the primary's own throttling
retries have already run by then), the same call goes to the secondary, the
failover is counted, and the primary is skipped for ``cooldown_s`` (the
``FAILOVER_COOLDOWN_SECONDS`` setting, 30 s by default) so an outage costs
one failed call per cool-down, not one per call. After the cool-down the primary
is tried again. If both sides fail, ``ServiceUnavailable`` names both.

Whatever is written to the secondary is read from there too. A position a
stream append got from the secondary names its side (``eventlog.sides``), and a
read that finds nothing on one side (``get``/``load`` returning None) asks the
other.

The cache and the retry store fail over with their own pairs, which know their
interfaces: ``handlers.cache.failover`` (leases and marks, primary first on every
call, marks read from both sides) and ``handlers.retries.failover`` (due retries
from both sides, handles that name their side).

Every pair counts the calls its secondary served (``failovers``) and the times the
primary answered again after that (``recoveries``), under the lock it already takes
for its routing. This layer cannot reach the metrics sink: the engine takes what
was counted since it last asked (``SidePair.take_counts``) when it flushes its
metrics, once per batch, so a failover met on every call of a batch costs no more
than the counting. Each change is also logged as one JSON line on the
``fsmlog.failover`` logger, at most one per source and change per ``LOG_EVERY_S``
(the next line says how many it held back), so an outage does not flood the logs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .errors import BackendError, ServiceUnavailable, SettingsError
from .proxy import declaring
from .settings import Settings
from .sides import SECONDARY, tag_position

DEFAULT_COOLDOWN_S = 30.0
LOG_EVERY_S = 10.0  # at most one failover (and one recovery) line per source this often

FAILOVER, RECOVERED = "failover", "recovered"

log = logging.getLogger("fsmlog.failover")

# failovers per source kind in this process (every call the secondary served instead of the primary)
FAILOVERS: Counter[str] = Counter()

_CONFIRM_EMPTY = {"get": None, "load": None}
_INTERFACE = frozenset({"append", "read", "read_key", "save", "save_many", "load", "put", "get", "park", "list", "remove"})
_OWN_PAIRS = {"CACHE": "handlers.cache.failover.FailoverSteps", "RETRY": "handlers.retries.failover.FailoverRetries"}


class FailoverLog:
    """One JSON warning line per source and change per ``every_s``; the changes it held back are
    counted (``suppressed``) in the next line it writes for that source and change.

    A line held back costs a clock read and a dict lookup, no lock: during an outage every call
    of a batch fails over, and the lock is taken only when a line is due."""

    def __init__(self, every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = log) -> None:
        self.every_s = every_s
        self.clock = clock
        self.logger = logger
        self._last: dict[tuple[str, str, str], tuple[float, int]] = {}  # key -> (when, changes counted then)
        self._lock = threading.Lock()

    def note(self, kind: str, what: str, side: str, source: str, changes: int,
             error: Callable[[], object] | None = None) -> bool:
        """Log a change (``what``: FAILOVER or RECOVERED) of ``source`` unless it logged the same
        change less than ``every_s`` ago. ``changes`` is the source's running count of that change;
        ``error`` (why the primary was passed over) is only formatted for a line that is written."""
        key = (kind, source, what)
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.every_s:
            return False
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last[0] < self.every_s:
                return False
            self._last[key] = (now, changes)
        line: dict[str, object] = {"event": what, "source": kind, "name": source, "side": side}
        if error is not None:
            line["error"] = _one_line(error())
        line["suppressed"] = max(0, changes - last[1] - 1) if last is not None else 0
        self.logger.warning("%s", json.dumps(line, default=str))
        return True


FAILOVER_LOG = FailoverLog()


def _one_line(error: object) -> str:
    text = str(error or "")
    return " ".join(text.split())[:500]


class SidePair:
    """What every primary/secondary pair shares (this proxy, and the cache's and retry store's own
    pairs): the primary's name, closing both sides, counting and logging failovers and recoveries,
    and pickling for worker processes without the lock (``_lock``) that guards its counters."""

    primary: Any
    secondary: Any
    kind: str
    failovers: int  # calls the secondary served instead of the primary (each pair's own routing counts them)
    recoveries = 0  # times the primary answered again after a failover
    last_error: BaseException | None = None
    _taken = (0, 0)  # (failovers, recoveries) when ``take_counts`` last ran
    _degraded = False  # the secondary served a call since the primary last answered

    def take_counts(self) -> tuple[int, int]:
        """(failovers, recoveries) since the last call, whoever made it: the engine's flush moves them
        into its metrics once per batch, and an engine built again over the same pair counts none twice."""
        with self._lock:
            failovers, recoveries = self.failovers, self.recoveries
            taken, self._taken = self._taken, (failovers, recoveries)
        return failovers - taken[0], recoveries - taken[1]

    def _note_failover(self, error: object | None = None) -> None:
        """The secondary served a call the primary did not (``failovers`` already counts it); ``error``
        is why, or None when the primary was skipped for its cool-down."""
        self._degraded = True
        FAILOVER_LOG.note(self.kind, FAILOVER, "secondary", self.name, self.failovers,
                          lambda: error if error is not None else self._skipped_reason())

    def _skipped_reason(self) -> str:
        return f"primary skipped for its cool-down after: {self.last_error}"

    def _note_primary_ok(self) -> None:
        """The primary served a call: after a failover, that is its recovery."""
        if not self._degraded:
            return
        with self._lock:
            if not self._degraded:
                return
            self._degraded = False
            self.recoveries += 1
            recoveries = self.recoveries
        FAILOVER_LOG.note(self.kind, RECOVERED, "primary", self.name, recoveries)

    @property
    def name(self) -> str:
        return self.primary.name

    def close(self) -> None:
        for side in (self.primary, self.secondary):
            close = getattr(side, "close", None)
            if close is not None:
                close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        state.pop("_degraded", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class CircuitPair(SidePair):
    """A pair whose primary, once it failed, is skipped for ``cooldown_s`` (the circuit breaker shared by
    this proxy and the retry store's pair)."""

    def __init__(self, kind: str, primary: Any, secondary: Any, *, cooldown_s: float = DEFAULT_COOLDOWN_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kind = kind
        self.primary = primary
        self.secondary = secondary
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until = float("-inf")  # primary skipped until then
        self.failovers = 0  # calls the secondary served instead of the primary
        self.served: Counter[str] = Counter()  # "primary"/"secondary" -> calls served
        self.last_error: BaseException | None = None

    @property
    def circuit_open(self) -> bool:
        return self._clock() < self._open_until

    def _trip(self, side: str, exc: BaseException) -> None:
        self.last_error = exc
        if side == "primary":
            with self._lock:
                self._open_until = self._clock() + self.cooldown_s


class FailoverProxy(CircuitPair):
    """Serves one source kind from the primary, falling over to the secondary.

    It declares the methods both sides have (``eventlog.proxy``), so it passes for the protocols
    they serve (batched checkpoints, a readable log) on every Python."""

    def __new__(cls, kind: str, primary: Any, secondary: Any, *args: Any, **kwargs: Any) -> FailoverProxy:
        return object.__new__(declaring(cls, primary, secondary))

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_") or attr in ("primary", "secondary"):  # unset while unpickling
            raise AttributeError(attr)
        if attr not in _INTERFACE:
            return getattr(self.primary, attr)
        if not callable(getattr(self.primary, attr, None)):
            return getattr(self.primary, attr)
        if not callable(getattr(self.secondary, attr, None)):  # an optional call only one side has
            raise AttributeError(f"{attr}: the secondary {self.kind.lower()} source {self.secondary.name} lacks it")

        def failing_over(*args: Any, **kwargs: Any) -> Any:
            return self._call(attr, args, kwargs)

        failing_over.__name__ = attr
        return failing_over

    # --- routing -------------------------------------------------------------------------------

    def _order(self) -> list[str]:
        return ["secondary", "primary"] if self.circuit_open else ["primary", "secondary"]

    def _served_by(self, side: str, error: object = None) -> None:
        with self._lock:
            self.served[side] += 1
            if side == "secondary":
                self.failovers += 1
                FAILOVERS[self.kind] += 1
        if side == "secondary":
            self._note_failover(error)
        else:
            self._note_primary_ok()

    def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        order = self._order()
        errors: dict[str, BackendError] = {}
        for i, side in enumerate(order):
            backend = getattr(self, side)
            try:
                result = getattr(backend, method)(*args, **kwargs)
            except BackendError as exc:
                errors[side] = exc
                self._trip(side, exc)
                continue
            if side == "secondary" and method == "append":  # the position names the stream it is on
                result = [tag_position(SECONDARY, p) for p in result]
            if side == "primary" and "secondary" not in errors and self.failovers == 0:
                self.served["primary"] += 1
                return result
            self._served_by(side, errors.get("primary"))
            other = order[i + 1] if i + 1 < len(order) else None
            if (other and method in _CONFIRM_EMPTY and result == _CONFIRM_EMPTY[method]
                    and not (other == "primary" and self.circuit_open)):
                result = self._confirm(other, method, args, kwargs, result)
            return result
        raise ServiceUnavailable(
            f"{self.kind.lower()} source unavailable on both sides: primary {self.primary.name} "
            f"({errors['primary']}); secondary {self.secondary.name} ({errors['secondary']})"
        ) from errors[order[-1]]

    def _confirm(self, side: str, method: str, args: tuple, kwargs: dict, empty: Any) -> Any:
        """After a failover, data may sit on the other side: ask it before answering 'nothing'."""
        try:
            return getattr(getattr(self, side), method)(*args, **kwargs)
        except BackendError:
            return empty


def with_failover(kind: str, primary: Any, secondary: Any, settings: Settings | None, *,
                  clock: Callable[[], float] = time.monotonic) -> FailoverProxy:
    """A proxy serving ``kind`` from ``primary``, falling over to ``secondary`` (see the module docstring)."""
    if kind in _OWN_PAIRS:
        raise SettingsError(f"{kind} sources fail over with {_OWN_PAIRS[kind]} (handlers.wiring.open_source "
                            f"builds it), not with the generic proxy")
    cooldown = DEFAULT_COOLDOWN_S
    if settings is not None:
        cooldown = float(settings.FAILOVER_COOLDOWN_SECONDS or DEFAULT_COOLDOWN_S)
    return FailoverProxy(kind, primary, secondary, cooldown_s=cooldown, clock=clock)
