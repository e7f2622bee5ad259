"""Placeholder replaced by the AWS backends work: fault injection (AWS_CHAOS)."""

from __future__ import annotations

from typing import Any


def with_chaos(backend: Any, target: str, settings: Any) -> Any:
    return backend
