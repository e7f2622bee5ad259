"""Proxies that runtime protocol checks see through, on every supported Python.

A proxy that forwards calls with ``__getattr__`` (chaos, failover, a test's partition) answers
``hasattr``, which is all ``isinstance`` against a ``runtime_checkable`` protocol asked up to
Python 3.11. From 3.12 on that check looks attributes up statically
(``inspect.getattr_static``), so the same proxy no longer passes for the protocol its backend
serves, and an optional fast path declared as a protocol (the cache's batched step gate,
batched checkpoints, retries that can tell their next due time) silently disappeared behind
it: on 3.13 a cache under ``AWS_CHAOS`` took the composed path of a plain cache.

``declaring(Proxy, backend, ...)`` is a subclass of ``Proxy`` that declares every public method
the backends all have, each forwarded through the proxy's own ``__getattr__`` (so the proxy
still decides what a call does), and ``name``, the one field the protocols declare. Instances
pickle by naming the proxy class and the backend types, for worker processes started with
``spawn``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

P = TypeVar("P")


def declaring(proxy: type[P], *backends: object) -> type[P]:
    """``proxy``, declaring the public methods every one of ``backends`` has (see the module docstring).

    A proxy class calls it from its ``__new__``, so every instance is of its declaring subclass."""
    if "_declared_for" in vars(proxy):
        proxy = proxy.__mro__[1]
    return _declaring(proxy, tuple(type(b) for b in backends))


def _public_methods(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")
            and callable(inspect.getattr_static(cls, name, None))
            and not isinstance(inspect.getattr_static(cls, name, None), type)}


_MADE: dict[tuple[type, tuple[type, ...]], type] = {}
_LOCK = threading.Lock()


def _declaring(proxy: type, types: tuple[type, ...]) -> type:
    """One class per proxy and backend types, made once (isinstance checks and pickling need one)."""
    with _LOCK:
        made = _MADE.get((proxy, types))
        if made is None:
            made = _MADE[(proxy, types)] = _make(proxy, types)
    return made


def _make(proxy: type, types: tuple[type, ...]) -> type:
    shared = set.intersection(*(_public_methods(t) for t in types)) if types else set()
    own = {name for name in dir(proxy) if not name.startswith("_")}
    body: dict[str, Any] = {name: _forwarded(name) for name in sorted(shared - own)}
    if inspect.getattr_static(proxy, "name", None) is None:  # the one field the protocols declare
        body["name"] = property(lambda self: type(self).__getattr__(self, "name"), doc="The backend's name.")
    body["__reduce__"] = _reduce
    body["__module__"] = proxy.__module__
    body["_declared_for"] = types
    names = "+".join(t.__name__ for t in types)
    return type(f"{proxy.__name__}[{names}]", (proxy,), body)


def _forwarded(name: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return type(self).__getattr__(self, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Forwarded through the proxy: ``{name}`` of the backend."
    return method


def _reduce(self: Any) -> tuple[Any, ...]:
    cls = type(self)
    getstate = getattr(cls, "__getstate__", None)
    state = getstate(self) if getstate is not None and getstate is not object.__dict__.get("__getstate__") \
        else dict(self.__dict__)
    return _rebuild, (_spec(cls),), state


def _spec(cls: type) -> Any:
    """A declaring class as what pickle can name: its proxy class and its backends' types (which may
    be declaring classes themselves: a failover pair over a chaos proxy)."""
    if "_declared_for" in vars(cls):
        return (cls.__mro__[1], tuple(_spec(t) for t in vars(cls)["_declared_for"]))
    return cls


def _type(spec: Any) -> type:
    if isinstance(spec, tuple):
        proxy, types = spec
        return _declaring(proxy, tuple(_type(t) for t in types))
    return spec


def _rebuild(spec: Any) -> Any:
    return object.__new__(_type(spec))
