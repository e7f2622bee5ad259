"""Start and steer machines from an application (a web app, a cron job) without running a worker.

The functions keep the older framework's names and arguments, so its callers port by
changing one import::

    from fsmlog.client import start_state_machine, send_event, status

    cid = start_state_machine("approval", {"amount": 40})
    send_event(cid, "approve", {"by": "ana"}, event_id="form-123")

They use the configured sources (``FSMLOG_SETTINGS`` and the environment, as the CLI and
the Lambda do) and the definitions at ``FSMLOG_DEFINITIONS`` (else ``./fsm.yaml``); the
first call opens them and later calls reuse them. A ``Client`` does the same with
settings and definitions given explicitly. Importing this module loads nothing heavy:
the sources (boto3 for AWS) are opened on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventlog.event import Event
    from eventlog.settings import Settings
    from handlers.engine import Engine
    from handlers.sending import Sent
    from projections.definition import Definitions
    from projections.state import MachineState

__all__ = ["Client", "abort", "configure", "send_event", "start_state_machine", "start_state_machines", "status"]


class Client:
    """The sources and definitions an application starts and steers machines through.

    ``definitions``: loaded ``Definitions`` or the path of an fsm.yaml (default: ``FSMLOG_DEFINITIONS``,
    else ./fsm.yaml). ``settings``: ``Settings`` (default: ``load_settings()``).
    """

    def __init__(self, definitions: Definitions | str | None = None, settings: Settings | None = None) -> None:
        self._definitions = definitions
        self._settings = settings
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The engine the calls go through (opened on first use; it runs no worker)."""
        with self._lock:
            if self._engine is None:
                from eventlog.settings import load_settings
                from handlers.engine import Engine
                from handlers.triggers.runtime import definitions_path
                from handlers.wiring import open_services
                from projections.definition import load

                defs = self._definitions
                if defs is None or isinstance(defs, str):
                    defs = load(defs or definitions_path(), check_actions=False)  # it runs no action
                settings = self._settings if self._settings is not None else load_settings()
                self._engine = Engine(defs, open_services(settings), settings)
            return self._engine

    def start_state_machine(self, machine_name: str, initial_context: Mapping[str, Any] | None,
                            correlation_id: str | None = None, current_state: str | None = None,
                            current_event: str | None = None, additional_delay_seconds: float = 0) -> str:
        """Start one machine; returns its correlation id."""
        return self.start_state_machines(machine_name, [initial_context or {}],
                                         [correlation_id] if correlation_id else None, current_state,
                                         current_event, additional_delay_seconds)[0]

    def start_state_machines(self, machine_name: str, user_contexts: Sequence[Mapping[str, Any] | None],
                             correlation_ids: Sequence[str] | None = None, current_state: str | None = None,
                             current_event: str | None = None, additional_delay_seconds: float = 0) -> list[str]:
        """Start one machine per context in one append (PutRecords where the stream batches)."""
        return self.engine.start_many(machine_name, [dict(c or {}) for c in user_contexts], correlation_ids,
                                      current_state=current_state, current_event=current_event,
                                      delay=float(additional_delay_seconds or 0))

    def send_event(self, correlation_id: str, event: str, data: Any = None, event_id: str | None = None) -> Sent:
        """Send an event to a machine waiting in a ``wait: true`` state; ``data`` lands in
        ``context["event_data"]``. Raises ``EventRefused`` (``code``, ``state``, ``event``) when it cannot
        take it; the same ``event_id`` again is applied once (``Sent.duplicate``)."""
        return self.engine.send_event(correlation_id, event, data, event_id)

    def status(self, correlation_id: str) -> MachineState | None:
        """The machine as its log has it (None: no such machine)."""
        return self.engine.status(correlation_id)

    def abort(self, correlation_id: str, reason: str = "") -> Event:
        """Stop a running machine; no further step runs."""
        return self.engine.abort(correlation_id, reason)

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.services.close()
                self._engine = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_default: Client | None = None
_default_lock = threading.Lock()


def configure(definitions: Definitions | str | None = None, settings: Settings | None = None) -> Client:
    """Set what the module-level functions use (else ``FSMLOG_DEFINITIONS`` and ``load_settings()``)."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = Client(definitions, settings)
        return _default


def _client() -> Client:
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def start_state_machine(machine_name: str, initial_context: Mapping[str, Any] | None,
                        correlation_id: str | None = None, current_state: str | None = None,
                        current_event: str | None = None, additional_delay_seconds: float = 0) -> str:
    return _client().start_state_machine(machine_name, initial_context, correlation_id, current_state,
                                         current_event, additional_delay_seconds)


def start_state_machines(machine_name: str, user_contexts: Sequence[Mapping[str, Any] | None],
                         correlation_ids: Sequence[str] | None = None, current_state: str | None = None,
                         current_event: str | None = None, additional_delay_seconds: float = 0) -> list[str]:
    return _client().start_state_machines(machine_name, user_contexts, correlation_ids, current_state,
                                          current_event, additional_delay_seconds)


def send_event(correlation_id: str, event: str, data: Any = None, event_id: str | None = None) -> Sent:
    return _client().send_event(correlation_id, event, data, event_id)


def status(correlation_id: str) -> MachineState | None:
    return _client().status(correlation_id)


def abort(correlation_id: str, reason: str = "") -> Event:
    return _client().abort(correlation_id, reason)


start_state_machine.__doc__ = Client.start_state_machine.__doc__
start_state_machines.__doc__ = Client.start_state_machines.__doc__
send_event.__doc__ = Client.send_event.__doc__
status.__doc__ = Client.status.__doc__
abort.__doc__ = Client.abort.__doc__
