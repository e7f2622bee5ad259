"""Errors of machine definitions and projections."""

from __future__ import annotations

from eventlog.errors import FsmlogError


class ProjectionError(FsmlogError):
    """Errors of definitions, the fold and snapshots."""


class DefinitionError(ProjectionError):
    """An fsm.yaml that cannot be loaded. ``problems`` lists every problem found, each with file,
    machine and state."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        head = f"{len(self.problems)} problem(s) in machine definitions:"
        super().__init__("\n  - ".join([head, *self.problems]))


class UnknownMachine(ProjectionError):
    """A record names a machine the loaded definitions do not have."""


class IncompatibleHistory(ProjectionError):
    """A record written under another definition hash whose state or event no longer exists."""


class FoldError(ProjectionError):
    """The fold was asked to mix machines."""
