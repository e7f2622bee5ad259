"""Fixtures shared by the unit tests."""

from tests.unit.engine_rig import rig_factory  # noqa: F401 - the engine rig, for test_engine and test_batch_dispatch_faults
