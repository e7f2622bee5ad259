"""Environment store: large dicts kept by id outside the log."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class EnvironmentStore(Protocol):
    name: str

    def put(self, env_id: str, data: bytes) -> None: ...

    def get(self, env_id: str) -> bytes | None: ...


class Environment:
    """What actions see as ``obj["environment"]``: dicts too large to travel in every record, kept by id.

    Values follow the user-context rules (msgpack types plus datetime, Decimal, UUID) so a
    dict comes back exactly as it was put. A machine keeps only the id in its context.
    """

    def __init__(self, store: EnvironmentStore):
        self.store = store

    def put(self, env_id: str, data: dict) -> None:
        from eventlog.context import encode_context

        self.store.put(env_id, encode_context(data, f" for environment id {env_id!r}"))

    def get(self, env_id: str) -> dict | None:
        from eventlog.context import decode_context

        raw = self.store.get(env_id)
        return None if raw is None else decode_context(raw)
