"""Machine definitions, the pure fold, snapshots and checkpoint stores."""

from .fold import fold, fold_all, fold_records
from .state import MachineState, Snapshot

__all__ = ["fold", "fold_all", "fold_records", "MachineState", "Snapshot"]
