"""Replay: rebuild a machine from snapshot + log, scan a log for stalled machines, the KCL application.

``replay.kcl_processor`` needs amazon-kclpy and is not imported here; ``replay.kcl_properties``
writes the MultiLangDaemon's properties file and command line.
"""

from .errors import BadPosition, ReplayError, UnknownCorrelationId, UnreadableLog
from .rebuild import Rebuilt, rebuild, redispatch, redispatch_many, retry_record
from .scan import (
    ProjectionFile,
    RefreshReport,
    ScanResult,
    Stalled,
    parse_duration,
    refresh_snapshots,
    scan,
    scan_projections,
    stalled,
)

__all__ = [
    "BadPosition", "ReplayError", "UnknownCorrelationId", "UnreadableLog",
    "Rebuilt", "rebuild", "redispatch", "redispatch_many", "retry_record",
    "ProjectionFile", "RefreshReport", "ScanResult", "Stalled", "parse_duration", "refresh_snapshots", "scan",
    "scan_projections", "stalled",
]
