"""Errors of the testing kit: things it refuses before any run (a bad schema, an unknown machine)."""

from __future__ import annotations

from eventlog.errors import FsmlogError


class TestingError(FsmlogError):
    """The kit cannot start: ``setting`` names the option or argument at fault, ``machine`` the machine."""

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(self, message: str, *, setting: str | None = None, machine: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
        self.machine = machine


class SchemaError(TestingError):
    """A context JSON Schema that cannot be read or that hypothesis-jsonschema cannot generate from."""
