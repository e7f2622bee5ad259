"""Errors of the dispatch engine and the Lambda entry points."""

from __future__ import annotations

from eventlog.errors import FsmlogError


class HandlerError(FsmlogError):
    """Errors of handlers/: the engine, its triggers and the local worker."""


class LeaseBusy(HandlerError):
    """Another worker holds the machine's lease for longer than we may wait; the record is retried later.

    ``for_held_leases``: the wait was cut short to protect leases this worker holds for steps
    not yet committed (commit them, then the wait may go on).
    """

    def __init__(self, message: str, *, for_held_leases: bool = False):
        super().__init__(message)
        self.for_held_leases = for_held_leases


class PoisonRecord(HandlerError):
    """A record that can never be handled (undecodable, unknown machine, invalid event for its state).

    It is parked in the dead-letter store with this message as the reason.
    """


class NoTransition(HandlerError):
    """An action returned an event with no transition from the state it was returned in."""


class EventRefused(HandlerError):
    """An event sent from outside that the machine cannot take now. ``code`` says why: ``UnknownMachine``,
    ``Ended``, ``NotWaiting`` (its state runs its own actions), ``NotWaitingYet`` (its start in a wait
    state has not run: worth sending again later), ``NoTransition`` (the state has no transition on
    it) or ``EventPending`` (another event for this step is already in the log)."""

    def __init__(self, message: str, *, code: str, correlation_id: str, machine: str | None = None,
                 state: str | None = None, event: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.correlation_id = correlation_id
        self.machine = machine
        self.state = state
        self.event = event
