"""The process-wide engine of a Lambda container: built on the first invocation, reused after.

Settings come from ``load_settings()`` (``FSMLOG_SETTINGS`` and the environment);
definitions from ``FSMLOG_DEFINITIONS`` (a path to fsm.yaml), else ``fsm.yaml`` in
the working directory, else in ``LAMBDA_TASK_ROOT``. With no source configured
everything runs on the embedded SQLite file, except inside Lambda: there a file
would live in one container's ``/tmp``, so an unset source is a ``SettingsError``
naming the setting (metrics alone default to ``emf:``; see ``eventlog.settings``).

The ``fsmlog.step`` logger writes one JSON line per step to stderr (CloudWatch
Logs keeps them); user context appears in them only when ``DEBUG`` is set.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventlog.errors import SettingsError
from eventlog.settings import Settings, load_settings

if TYPE_CHECKING:  # the engine is imported on first use: a cold start that fails early stays cheap
    from projections.definition import Definitions

    from ..engine import Engine

_lock = threading.RLock()
_engine: Engine | None = None
_step_engine: Engine | None = None
_logging_done = False


class _StepLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def configure_logging(settings: Settings | None = None) -> None:
    """Send ``fsmlog.step`` JSON lines to stderr at INFO, once per process."""
    global _logging_done
    if _logging_done:
        return
    step = logging.getLogger("fsmlog.step")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StepLines())
    step.addHandler(handler)
    step.setLevel(logging.INFO)
    step.propagate = False  # Lambda's root handler would print every line twice
    base = logging.getLogger("fsmlog")
    if base.level == logging.NOTSET:
        base.setLevel(logging.DEBUG if settings is not None and settings.DEBUG else logging.WARNING)
    if not logging.getLogger().handlers and not base.handlers:
        other = logging.StreamHandler(sys.stderr)
        other.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        base.addHandler(other)
    _logging_done = True


def in_lambda() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or os.environ.get("LAMBDA_TASK_ROOT"))


def runtime_settings(environ: dict[str, str] | None = None) -> Settings:
    """``load_settings()``. Inside Lambda an unset source is not filled in with a file under /tmp:
    opening it raises ``SettingsError`` naming the setting (see ``eventlog.settings``)."""
    return load_settings(environ)


def definitions_path(environ: dict[str, str] | None = None) -> Path:
    """Where fsm.yaml is: ``FSMLOG_DEFINITIONS``, else ./fsm.yaml, else $LAMBDA_TASK_ROOT/fsm.yaml."""
    env = os.environ if environ is None else environ
    named = env.get("FSMLOG_DEFINITIONS")
    if named:
        path = Path(named)
        if not path.is_absolute() and not path.exists() and env.get("LAMBDA_TASK_ROOT"):
            path = Path(env["LAMBDA_TASK_ROOT"]) / named
        if not path.exists():
            raise SettingsError(f"FSMLOG_DEFINITIONS names {named}, which does not exist")
        return path
    candidates = [Path.cwd() / "fsm.yaml"]
    if env.get("LAMBDA_TASK_ROOT"):
        candidates.append(Path(env["LAMBDA_TASK_ROOT"]) / "fsm.yaml")
    for path in candidates:
        if path.exists():
            return path
    raise SettingsError(
        "no machine definitions: set FSMLOG_DEFINITIONS to the path of your fsm.yaml, or put fsm.yaml in "
        f"{' or '.join(str(p.parent) for p in candidates)}"
    )


def build_engine(settings: Settings | None = None, definitions: Definitions | None = None,
                 **engine_kwargs: Any) -> Engine:
    """A new engine over freshly opened services (what ``engine()`` caches)."""
    from projections.definition import load

    from ..engine import Engine
    from ..wiring import open_services

    settings = settings if settings is not None else runtime_settings()
    configure_logging(settings)
    if definitions is None:
        definitions = load(definitions_path())
    return Engine(definitions, open_services(settings), settings, **engine_kwargs)


def engine() -> Engine:
    """The container's engine, built on first use."""
    global _engine
    found = _engine
    if found is not None:
        return found
    with _lock:
        if _engine is None:
            _engine = build_engine()
        return _engine


class _HeldRetries:
    """A retry source that keeps nothing: under Step Functions the state machine retries the task."""

    def __init__(self, name: str) -> None:
        self.name = name

    def schedule(self, retries: Any) -> None:
        return None

    def due(self, now: float, limit: int) -> list:
        return []

    def done(self, handles: Any) -> None:
        return None


def step_engine() -> Engine:
    """The engine the Step Functions task uses: the same services, except that a failed step is not
    scheduled in the retry source (the state machine's Retry runs it again)."""
    global _step_engine
    found = _step_engine
    if found is not None:
        return found
    with _lock:
        if _step_engine is None:
            from ..engine import Engine

            base = engine()
            services = replace(base.services, retries=_HeldRetries("step-functions"))
            _step_engine = Engine(base.definitions, services, base.settings, worker_id=base.worker_id)
        return _step_engine


def set_engine(new: Engine | None) -> None:
    """Use ``new`` as the container's engine (the local dev loop and tests build their own)."""
    global _engine, _step_engine
    with _lock:
        _engine = new
        _step_engine = None


def reset(close: bool = True) -> None:
    """Forget the cached engine (closing its services), so the next invocation builds a new one."""
    global _engine, _step_engine
    with _lock:
        old, _engine, _step_engine = _engine, None, None
    if close and old is not None:
        try:
            old.services.close()
        except Exception as exc:  # closing is best effort; the process may be going away
            logging.getLogger("fsmlog.triggers").warning("closing services: %s", exc)

