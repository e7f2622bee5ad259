"""User actions: the ``Action`` base class and the import of the dotted paths fsm.yaml names.

An fsm.yaml refers to actions by dotted path (``shop.actions.Validate``). ``resolve`` turns a
path into one callable ``(context, obj) -> str | None``, once per process: an ``Action``
subclass is instantiated once (so it may keep clients or connections on ``self``), a function
is used as is. Definitions resolve every action at load time, so a typo fails the deploy, not
the first machine that reaches the state.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import reprlib
import threading
from collections.abc import Callable
from typing import Any

from .errors import ProjectionError

ActionCallable = Callable[[Any, Any], "str | None"]


class ActionImportError(ProjectionError):
    """A dotted action path that does not name a usable action.

    ``dotted`` is the path, ``reason`` says what is wrong with it and how to fix it.
    """

    def __init__(self, dotted: str, reason: str):
        self.dotted = dotted
        self.reason = reason
        super().__init__(f"action {dotted!r}: {reason}")


class Action:
    """Base class of user actions (public as ``fsmlog.Action``).

    Subclass it and implement ``execute``. ``context`` is the machine's user context (a dict that
    travels with the machine, plus read-only ``correlation_id``, ``machine_name``, ``steps``,
    ``retries``, ``max_retries``, ``current_state``, ``current_event``); ``obj`` is a dict of
    runtime facts (``source``, ``fence_token``, ``idempotency_key``, ...). A do action's return
    value is the machine's next event; ``None`` ends the machine. The instance is created once per
    process with no arguments and shared by every machine, so keep per-machine data in
    ``context``, not on ``self``.
    """

    def execute(self, context: Any, obj: Any) -> str | None:
        cls = type(self)
        raise NotImplementedError(
            f"{cls.__module__}.{cls.__qualname__} must override execute(self, context, obj) "
            "and return the next event name, or None to end the machine"
        )


_cache: dict[str, ActionCallable] = {}
_lock = threading.RLock()


def is_dotted_path(dotted: object) -> bool:
    """True for a string shaped like ``package.module.Name`` (at least two identifiers)."""
    if not isinstance(dotted, str):
        return False
    parts = dotted.split(".")
    return len(parts) >= 2 and all(p.isidentifier() for p in parts)


def resolve(dotted: str) -> ActionCallable:
    """The callable ``(context, obj) -> str | None`` named by ``dotted`` (``module.Name``).

    ``Name`` may be an ``Action`` subclass (instantiated once, its bound ``execute`` returned),
    an ``Action`` instance, or a function (any other non-class callable taking
    ``(context, obj)``). Successful results are cached per path; failures are not, so a fixed
    module is picked up on the next call. Raises ``ActionImportError`` saying why and what to fix.
    """
    fn = _cache.get(dotted)
    if fn is not None:
        return fn
    with _lock:
        fn = _cache.get(dotted)
        if fn is None:
            fn = _load(dotted)
            _cache[dotted] = fn
    return fn


def clear_cache() -> None:
    """Forget resolved actions (tests, or a process that reloads its action modules)."""
    with _lock:
        _cache.clear()


def _load(dotted: str) -> ActionCallable:
    if not is_dotted_path(dotted):
        raise ActionImportError(
            dotted, "not a dotted path like 'package.module.Name' (identifiers joined by dots, no spaces)"
        )
    module_name, _, attr = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ActionImportError(
                dotted,
                f"module {module_name!r} not found (no module named {missing!r}); "
                "is its directory on sys.path / PYTHONPATH?",
            ) from None
        raise ActionImportError(
            dotted, f"importing module {module_name!r} failed: ModuleNotFoundError: {exc}"
        ) from exc
    except Exception as exc:
        raise ActionImportError(
            dotted, f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        target = getattr(module, attr)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith("_")]
        close = difflib.get_close_matches(attr, names, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ActionImportError(dotted, f"module {module_name!r} has no attribute {attr!r}{hint}") from None
    return _as_callable(dotted, target)


def _as_callable(dotted: str, target: object) -> ActionCallable:
    if inspect.isclass(target):
        if not issubclass(target, Action):
            raise ActionImportError(
                dotted,
                f"class {target.__qualname__} does not subclass fsmlog.Action; subclass Action and "
                "implement execute(self, context, obj), or name a function (context, obj)",
            )
        if target.execute is Action.execute:
            raise ActionImportError(dotted, f"class {target.__qualname__} does not override execute(self, context, obj)")
        try:
            instance = target()
        except Exception as exc:
            raise ActionImportError(
                dotted,
                f"creating {target.__qualname__}() failed: {type(exc).__name__}: {exc} "
                "(an Action subclass is instantiated once, with no arguments)",
            ) from exc
        fn: ActionCallable = instance.execute
    elif isinstance(target, Action):
        if type(target).execute is Action.execute:
            raise ActionImportError(
                dotted, f"{type(target).__qualname__} instance does not override execute(self, context, obj)"
            )
        fn = target.execute
    elif callable(target):
        fn = target
    else:
        raise ActionImportError(
            dotted,
            f"is not an Action subclass or a function (context, obj) but a value of type "
            f"{type(target).__name__}: {reprlib.repr(target)}",
        )
    _check_signature(dotted, fn)
    return fn


def _check_signature(dotted: str, fn: Callable[..., Any]) -> None:
    """Refuse, at load time, a callable that cannot be called as ``fn(context, obj)``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # some builtins have no signature; they fail when called, if at all
    try:
        sig.bind(None, None)
    except TypeError as exc:
        raise ActionImportError(
            dotted, f"cannot be called as (context, obj): its signature is {sig} ({exc})"
        ) from None
