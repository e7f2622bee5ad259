"""Property-based tests of your own machines: the real engine, in process, under a generated adversary.

    from hypothesis import given
    from fsmlog.testing import Kit, cases, contexts_from_schema

    kit = Kit("fsm.yaml")                     # your machines, their actions importable
    @given(cases("order", contexts_from_schema("context.schema.json"), machines=2))
    def test_my_invariant(case):
        run = kit.run(case)                   # every action call, the log, each machine's end
        ...

``kit.check("order", contexts=...)`` runs the built-in properties P1-P6
(``fsmlog.testing.properties``) and shrinks what breaks them; ``fsmlog test``
is the same from the command line. Installed with ``pip install 'fsmlog[testing]'``;
the pytest plugin (``fsmlog.testing.plugin``) adds the ``fsmlog_kit`` fixture.
"""

from __future__ import annotations

from .adversary import KINDS, Case, Fault, cases, contexts_from_schema, faults, load_schema
from .errors import SchemaError, TestingError
from .properties import PROPERTIES, Report, Violation, check_case, judge, search
from .recording import AppliedFault, Invocation, MachineOutcome, Run
from .runner import InjectedFault, Kit, SimulatedCrash

__all__ = [
    "KINDS", "PROPERTIES",
    "AppliedFault", "Case", "Fault", "InjectedFault", "Invocation", "Kit", "MachineOutcome", "Report", "Run",
    "SchemaError", "SimulatedCrash", "TestingError", "Violation",
    "cases", "check_case", "contexts_from_schema", "faults", "judge", "load_schema", "search",
]
