"""Primary/secondary failover for every source kind, with a circuit breaker.

Each call goes to the primary. When it raises ``BackendError`` (which includes
``ServiceUnavailable`` and injected ``ChaosError``; the primary's own throttling
retries have already run by then), the same call goes to the secondary, the
failover is counted, and the primary is skipped for ``cooldown_s`` (the
``FAILOVER_COOLDOWN_SECONDS`` setting, 30 s by default) so an outage costs
one failed call per cool-down, not one per call. After the cool-down the primary
is tried again. If both sides fail, ``ServiceUnavailable`` names both.

Caches keep a machine on one side: once a machine's lease was taken on the
secondary, its later ``acquire``/``release``/``mark``/``marked`` calls go to the
secondary first, even after the primary is back, so a lease is never split
across two stores. The machine is the correlation id read from the key: the
text after the first colon (``lease:<cid>``, ``abort:<cid>`` -> ``<cid>``), less the
step gate's trailing numbers (``done:<cid>:<steps>``, ``tried:<cid>:<steps>:<retries>``
-> ``<cid>``).

Data written to the secondary during an outage is still found after it: once
this process has failed over, a read that finds nothing on one side
(``get``/``load`` returning None, ``marked`` returning False) asks the other.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from .errors import BackendError, ServiceUnavailable

DEFAULT_COOLDOWN_S = 30.0
_STICKY_MAX = 100_000  # machines remembered on the secondary, oldest forgotten first
_STEP_SUFFIX = re.compile(r"^(.*):\d+$")

# failovers per source kind in this process (every call the secondary served instead of the primary)
FAILOVERS: Counter[str] = Counter()

_CACHE_METHODS = frozenset({"acquire", "release", "mark", "marked"})
_STEP_METHODS = frozenset({"begin_step", "end_step", "abort_machine"})
_UNROUTED = frozenset({"begin_steps", "end_steps"})  # not offered through failover: the gate goes step by step  # the step gate's fast path: first argument is the cid
_CONFIRM_EMPTY = {"get": None, "load": None, "marked": False}
_INTERFACE = frozenset({
    "append", "read", "read_key", "save", "load", "schedule", "due", "done",
    "acquire", "release", "mark", "marked", "put", "get", "park", "list", "remove", "begin_step", "end_step",
    "abort_machine",
})


_STEP_SUFFIXES = {"done": 1, "tried": 2}  # numbers after the cid in the gate's composed keys


def machine_of(key: str) -> str:
    """The correlation id a cache key belongs to (see the module docstring)."""
    prefix, sep, rest = key.partition(":")
    if not sep:
        return key
    for _ in range(_STEP_SUFFIXES.get(prefix, 0)):
        m = _STEP_SUFFIX.match(rest)
        if m:
            rest = m.group(1)
    return rest


class FailoverProxy:
    """Serves one source kind from the primary, falling over to the secondary."""

    def __init__(self, kind: str, primary: Any, secondary: Any, *, cooldown_s: float = DEFAULT_COOLDOWN_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kind = kind
        self.primary = primary
        self.secondary = secondary
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until = float("-inf")  # primary skipped until then
        self._sticky: OrderedDict[str, None] = OrderedDict()  # machines whose lease lives on the secondary
        self.failovers = 0  # calls the secondary served instead of the primary
        self.served: Counter[str] = Counter()  # "primary"/"secondary" -> calls served
        self.last_error: BaseException | None = None

    @property
    def name(self) -> str:
        return self.primary.name

    @property
    def circuit_open(self) -> bool:
        return self._clock() < self._open_until

    def sticky(self, correlation_id: str) -> bool:
        """Whether this machine's cache calls stay on the secondary."""
        with self._lock:
            return correlation_id in self._sticky

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

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_") or attr in ("primary", "secondary"):  # unset while unpickling
            raise AttributeError(attr)
        if attr in _UNROUTED:  # batch calls span machines that may live on different sides
            raise AttributeError(attr)
        if attr not in _INTERFACE:
            return getattr(self.primary, attr)
        if not callable(getattr(self.primary, attr, None)):
            return getattr(self.primary, attr)
        if attr in _STEP_METHODS and not callable(getattr(self.secondary, attr, None)):
            raise AttributeError(attr)  # both sides must offer the fast gate, or the gate composes basic calls

        def failing_over(*args: Any, **kwargs: Any) -> Any:
            return self._call(attr, args, kwargs)

        failing_over.__name__ = attr
        return failing_over

    # --- routing -------------------------------------------------------------------------------

    def _order(self, method: str, cid: str | None) -> list[str]:
        with self._lock:
            if cid is not None and cid in self._sticky:
                self._sticky.move_to_end(cid)
                return ["secondary", "primary"]
        if self.circuit_open:
            return ["secondary", "primary"]
        return ["primary", "secondary"]

    def _served_by(self, side: str, method: str, cid: str | None, failed_first: bool) -> None:
        with self._lock:
            self.served[side] += 1
            if side == "secondary":
                self.failovers += 1
                FAILOVERS[self.kind] += 1
            if cid is None or method not in ("acquire", "begin_step"):
                return
            if side == "secondary":
                self._sticky[cid] = None
                self._sticky.move_to_end(cid)
                while len(self._sticky) > _STICKY_MAX:
                    self._sticky.popitem(last=False)
            elif failed_first:
                self._sticky.pop(cid, None)  # the secondary is down: the lease now lives on the primary

    def _trip(self, side: str, exc: BaseException) -> None:
        self.last_error = exc
        if side == "primary":
            with self._lock:
                self._open_until = self._clock() + self.cooldown_s

    def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        cid = None
        if method in _CACHE_METHODS:
            key = args[0] if args else kwargs.get("key")
            if isinstance(key, str):
                cid = machine_of(key)
        elif method in _STEP_METHODS and args and isinstance(args[0], str):
            cid = args[0]
        order = self._order(method, cid)
        errors: dict[str, BackendError] = {}
        for i, side in enumerate(order):
            backend = getattr(self, side)
            try:
                result = getattr(backend, method)(*args, **kwargs)
            except BackendError as exc:
                errors[side] = exc
                self._trip(side, exc)
                continue
            if side == "primary" and "secondary" not in errors and self.failovers == 0:
                self.served["primary"] += 1
                return result
            self._served_by(side, method, cid, failed_first=i > 0)
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
    cooldown = DEFAULT_COOLDOWN_S
    if settings is not None:
        cooldown = float(settings.get("FAILOVER_COOLDOWN_SECONDS", DEFAULT_COOLDOWN_S) or DEFAULT_COOLDOWN_S)
    return FailoverProxy(kind, primary, secondary, cooldown_s=cooldown, clock=clock)
