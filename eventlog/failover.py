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
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .errors import BackendError, ServiceUnavailable, SettingsError
from .sides import SECONDARY, tag_position

DEFAULT_COOLDOWN_S = 30.0

# failovers per source kind in this process (every call the secondary served instead of the primary)
FAILOVERS: Counter[str] = Counter()

_CONFIRM_EMPTY = {"get": None, "load": None}
_INTERFACE = frozenset({"append", "read", "read_key", "save", "save_many", "load", "put", "get", "park", "list", "remove"})
_OWN_PAIRS = {"CACHE": "handlers.cache.failover.FailoverSteps", "RETRY": "handlers.retries.failover.FailoverRetries"}


class SidePair:
    """What every primary/secondary pair shares (this proxy, and the cache's and retry store's own
    pairs): the primary's name, closing both sides, and pickling for worker processes without the lock
    (``_lock``) that guards its counters."""

    primary: Any
    secondary: Any

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
    """Serves one source kind from the primary, falling over to the secondary."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_") or attr in ("primary", "secondary"):  # unset while unpickling
            raise AttributeError(attr)
        if attr not in _INTERFACE:
            return getattr(self.primary, attr)
        if not callable(getattr(self.primary, attr, None)):
            return getattr(self.primary, attr)

        def failing_over(*args: Any, **kwargs: Any) -> Any:
            return self._call(attr, args, kwargs)

        failing_over.__name__ = attr
        return failing_over

    # --- routing -------------------------------------------------------------------------------

    def _order(self) -> list[str]:
        return ["secondary", "primary"] if self.circuit_open else ["primary", "secondary"]

    def _served_by(self, side: str) -> None:
        with self._lock:
            self.served[side] += 1
            if side == "secondary":
                self.failovers += 1
                FAILOVERS[self.kind] += 1

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
            self._served_by(side)
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


def with_failover(kind: str, primary: Any, secondary: Any, settings: Any, *,
                  clock: Callable[[], float] = time.monotonic) -> FailoverProxy:
    """A proxy serving ``kind`` from ``primary``, falling over to ``secondary`` (see the module docstring)."""
    if kind in _OWN_PAIRS:
        raise SettingsError(f"{kind} sources fail over with {_OWN_PAIRS[kind]} (handlers.wiring.open_source "
                            f"builds it), not with the generic proxy")
    cooldown = DEFAULT_COOLDOWN_S
    if settings is not None:
        cooldown = float(settings.get("FAILOVER_COOLDOWN_SECONDS", DEFAULT_COOLDOWN_S) or DEFAULT_COOLDOWN_S)
    return FailoverProxy(kind, primary, secondary, cooldown_s=cooldown, clock=clock)
