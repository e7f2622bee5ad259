"""Environment store: large dicts kept by id outside the log."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class EnvironmentStore(Protocol):
    name: str

    def put(self, env_id: str, data: bytes) -> None: ...

    def get(self, env_id: str) -> bytes | None: ...
