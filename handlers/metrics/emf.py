"""Metrics as CloudWatch Embedded Metric Format lines on stdout: zero API calls.

In Lambda, CloudWatch Logs turns each line into metrics asynchronously, so a
batch pays nothing for its counters. One ``put`` prints one JSON line; only
data that cannot share a line (the same dimension name with different values,
or the same metric name twice) is spread over more lines, and a line never
carries more than the 100 metrics EMF allows.

Setting value: ``emf:`` (namespace from ``METRICS_NAMESPACE``) or ``emf:<namespace>``.

The ``fsmlog`` command line calls ``send_to_stderr()``: its stdout is its own output (one
JSON document with ``--json``), so there the lines go to stderr. On Lambda they stay on
stdout, where CloudWatch Logs reads them.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from eventlog.settings import Settings

from . import Datum

MAX_METRICS_PER_LINE = 100

_to_stderr = False  # set by the command line: its stdout carries its own output


def send_to_stderr(on: bool = True) -> bool:
    """Print EMF lines on stderr (what the CLI does) instead of stdout (what Lambda reads); returns
    the previous choice, so a caller can put it back."""
    global _to_stderr
    was, _to_stderr = _to_stderr, on
    return was


class _Line:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}  # metric values and dimension values share the top level
        self.metrics: dict[str, str] = {}  # metric name -> unit
        self.groups: dict[tuple[str, ...], list[str]] = {}  # dimension names -> metric names

    def fits(self, d: Datum) -> bool:
        if len(self.metrics) >= MAX_METRICS_PER_LINE or d.name in self.values:
            return False
        return all(self.values.get(k, v) == v and k not in self.metrics for k, v in d.dimensions)

    def add(self, d: Datum) -> None:
        for k, v in d.dimensions:
            self.values[k] = v
        self.values[d.name] = d.value
        self.metrics[d.name] = d.unit
        self.groups.setdefault(tuple(k for k, _ in d.dimensions), []).append(d.name)


class EmfMetrics:
    """Counters printed as Embedded Metric Format JSON, one line per ``put``."""

    def __init__(self, namespace: str, *, stream: TextIO | None = None, name: str = "emf:",
                 clock: Any = time.time) -> None:
        self.name = name
        self.namespace = namespace
        self._stream = stream
        self._clock = clock

    @classmethod
    def from_target(cls, target: str, settings: Settings) -> EmfMetrics:
        namespace = target[len("emf:"):].strip() or str(settings.METRICS_NAMESPACE or "fsmlog")
        return cls(namespace, name=target)

    def lines(self, data: Sequence[Datum]) -> list[str]:
        """The EMF documents ``put`` prints for ``data``."""
        packed: list[_Line] = []
        for d in data:
            line = next((ln for ln in packed if ln.fits(d)), None)
            if line is None:
                line = _Line()
                packed.append(line)
            line.add(d)
        stamp = int(self._clock() * 1000)
        out = []
        for line in packed:
            directives = [
                {"Namespace": self.namespace, "Dimensions": [list(dims)],
                 "Metrics": [{"Name": n, "Unit": line.metrics[n]} for n in names]}
                for dims, names in line.groups.items()
            ]
            doc = {"_aws": {"Timestamp": stamp, "CloudWatchMetrics": directives}, **line.values}
            out.append(json.dumps(doc, separators=(",", ":"), default=str))
        return out

    def put(self, data: Sequence[Datum]) -> None:
        if not data:
            return
        stream = self._stream or (sys.stderr if _to_stderr else sys.stdout)
        for line in self.lines(data):
            stream.write(line + "\n")
        stream.flush()
