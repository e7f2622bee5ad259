"""Fault injection from the ``AWS_CHAOS`` setting, locally and deployed.

``AWS_CHAOS = {source: {exception_name: probability}}``. ``source`` is matched,
most specific first, against:

1. the setting value itself (an ARN, a ``sqlite:`` / ``redis://`` URL ...);
2. the service it names: ``kinesis``, ``dynamodb``, ``sqs``, ``sns``,
   ``redis``, ``memcached``, ``cloudwatch``, ``emf``, ``sqlite``;
3. the setting kind: ``STREAM``, ``CHECKPOINT``, ``RETRY``, ``ENVIRONMENT``,
   ``CACHE``, ``METRICS``, ``DEAD_LETTER``.

Only the first matching entry applies. On each call of a public method of the
backend's interface, every configured exception is drawn in turn; the first
one whose draw falls under its probability is raised as ``ChaosError`` naming
the exception and the source. ``ChaosError`` is a ``ServiceUnavailable``, so
failover treats an injected fault exactly like a real outage. A number instead
of a mapping (``{"CACHE": 0.1}``) injects ``ServiceUnavailable`` with that
probability.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from typing import Any

from .errors import ChaosError, SettingsError
from .proxy import declaring
from .settings import SOURCES, Settings

# the public methods of each interface: these are the ones that fail on purpose
INTERFACE_METHODS: dict[str, tuple[str, ...]] = {
    "STREAM": ("append", "read", "read_key"),
    "CHECKPOINT": ("save", "save_many", "load"),
    "RETRY": ("schedule", "due", "done"),
    "CACHE": ("acquire", "release", "extend", "mark", "marked", "abort_machine", "begin_steps", "end_steps",
              "renew_leases", "check_leases", "peek_steps"),
    "DEAD_LETTER": ("park", "list", "get", "remove"),
    "ENVIRONMENT": ("put", "get"),
    "METRICS": ("put",),
}
# the methods that tell a backend's kind when it is not given, most distinctive first
_SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("CACHE", ("acquire", "release", "mark", "marked")),
    ("DEAD_LETTER", ("park", "get", "remove")),
    ("RETRY", ("schedule", "due", "done")),
    ("CHECKPOINT", ("save", "load")),
    ("STREAM", ("append",)),
    ("ENVIRONMENT", ("put", "get")),
    ("METRICS", ("put",)),
)


def service_name(target: str, settings: Settings | None = None) -> str:
    """The service a setting value names (``kinesis``, ``redis``, ``sqlite`` ...), ``""`` if unknown."""
    for prefix, service in (("sqlite:", "sqlite"), ("emf:", "emf"), ("redis://", "redis"),
                            ("rediss://", "redis"), ("memcached://", "memcached")):
        if target.startswith(prefix):
            return service
    parts = target.split(":")
    if len(parts) >= 6 and parts[0] == "arn":
        if parts[2] != "elasticache":
            return parts[2]
        endpoints = (settings.ENDPOINTS if settings is not None else None) or {}
        endpoint = str(endpoints.get(target, ""))
        return "memcached" if endpoint.startswith("memcached://") or "memcached" in target.lower() else "redis"
    return ""


def kind_of(backend: Any) -> str | None:
    """The setting kind a backend serves, told from the methods it has."""
    for kind, methods in _SIGNATURES:
        if all(callable(getattr(backend, m, None)) for m in methods):
            return kind
    return None


def faults_for(target: str, settings: Settings | None, kind: str | None = None) -> dict[str, float]:
    """The ``{exception_name: probability}`` that applies to one backend (empty: no chaos)."""
    chaos = (settings.AWS_CHAOS if settings is not None else None) or {}
    if not isinstance(chaos, Mapping):
        raise SettingsError(f"setting AWS_CHAOS must be a mapping of source to {{exception: probability}}, got {chaos!r}")
    for candidate in (target, service_name(target, settings), kind):
        if candidate and candidate in chaos:
            return _validated(candidate, chaos[candidate])
    return {}


def _validated(source: str, entry: Any) -> dict[str, float]:
    if isinstance(entry, (int, float)) and not isinstance(entry, bool):
        entry = {"ServiceUnavailable": entry}
    if not isinstance(entry, Mapping):
        raise SettingsError(f"setting AWS_CHAOS[{source!r}] must map exception names to probabilities, got {entry!r}")
    out: dict[str, float] = {}
    for name, p in entry.items():
        try:
            prob = float(p)
        except (TypeError, ValueError):
            prob = -1.0
        if not 0.0 <= prob <= 1.0:
            raise SettingsError(
                f"setting AWS_CHAOS[{source!r}][{name!r}] must be a probability between 0 and 1, got {p!r}"
            )
        out[str(name)] = prob
    return out


class ChaosProxy:
    """Wraps a backend; its interface methods fail on purpose, everything else passes through.

    It declares the backend's methods (``eventlog.proxy``), so it passes for every protocol the
    backend serves, fast paths included, on every Python."""

    def __new__(cls, backend: Any, *args: Any, **kwargs: Any) -> ChaosProxy:
        return object.__new__(declaring(cls, backend))

    def __init__(self, backend: Any, target: str, kind: str | None, faults: dict[str, float],
                 rng: random.Random, service: str | None = None) -> None:
        self._backend = backend
        self._target = target
        self._service = service or service_name(target) or None  # for the errors' ``service`` field
        self._faults = faults
        self._rng = rng
        self._methods = set(INTERFACE_METHODS.get(kind, ())) if kind else set().union(*INTERFACE_METHODS.values())
        self.kind = kind
        self.injected = 0  # faults raised so far, for tests and the local dashboard

    @property
    def name(self) -> str:
        return self._backend.name

    @property
    def wrapped(self) -> Any:
        return self._backend

    def _strike(self, method: str) -> None:
        for exc_name, p in self._faults.items():
            if p > 0.0 and self._rng.random() < p:
                self.injected += 1
                raise ChaosError(f"chaos: injected {exc_name} on {self._target} ({method})", code=exc_name,
                                 service=self._service, operation=method, resource=self._target)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):  # also keeps unpickling from recursing before _backend is set
            raise AttributeError(attr)
        value = getattr(self._backend, attr)
        if attr not in self._methods or not callable(value):
            return value

        @functools.wraps(value)
        def chaotic(*args: Any, **kwargs: Any) -> Any:
            self._strike(attr)
            return value(*args, **kwargs)

        return chaotic

    def __repr__(self) -> str:
        return f"ChaosProxy({self._backend!r}, faults={self._faults!r})"


def with_chaos(backend: Any, target: str, settings: Settings | None, *, kind: str | None = None,
               rng: random.Random | None = None) -> Any:
    """``backend`` itself when AWS_CHAOS names nothing that applies, else a ``ChaosProxy``.

    ``kind`` is told from the backend's methods when not given. ``rng`` makes the
    draws reproducible in tests; the default is seeded from the OS.
    """
    if kind is not None and kind not in SOURCES:
        raise SettingsError(f"unknown source kind {kind!r}; known: {', '.join(SOURCES)}")
    kind = kind or kind_of(backend)
    faults = faults_for(target, settings, kind)
    if not any(p > 0.0 for p in faults.values()):
        return backend
    return ChaosProxy(backend, target, kind, faults, rng or random.Random(), service_name(target, settings))
