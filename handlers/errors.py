"""Errors of the dispatch engine and the Lambda entry points."""

from __future__ import annotations

from eventlog.errors import FsmlogError


class HandlerError(FsmlogError):
    """Errors of handlers/: the engine, its triggers and the local worker."""


class LeaseBusy(HandlerError):
    """Another worker holds the machine's lease for longer than we may wait; the record is retried later."""


class PoisonRecord(HandlerError):
    """A record that can never be handled (undecodable, unknown machine, invalid event for its state).

    It is parked in the dead-letter store with this message as the reason.
    """


class NoTransition(HandlerError):
    """An action returned an event with no transition from the state it was returned in."""
