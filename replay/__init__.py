"""Replay: rebuild a machine from snapshot + log, scan a log for stalled machines, the KCL application.

``replay.kcl_processor`` needs amazon-kclpy and is not imported here.
"""

from .errors import BadPosition, ReplayError, UnknownCorrelationId, UnreadableLog
from .rebuild import Rebuilt, rebuild, redispatch
from .scan import (
    ProjectionFile,
    RefreshReport,
    ScanResult,
    Stalled,
    refresh_snapshots,
    scan,
    scan_projections,
    stalled,
)

__all__ = [
    "BadPosition", "ReplayError", "UnknownCorrelationId", "UnreadableLog",
    "Rebuilt", "rebuild", "redispatch",
    "ProjectionFile", "RefreshReport", "ScanResult", "Stalled", "refresh_snapshots", "scan", "scan_projections",
    "stalled",
]
