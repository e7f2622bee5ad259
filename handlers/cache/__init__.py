"""Cache: machine leases with fence tokens, and idempotency flags."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Cache(Protocol):
    name: str

    def acquire(self, key: str, owner: str, ttl_s: float) -> int | None:
        """Take the lease ``key`` for ``owner`` (re-entrant for the same owner).

        Returns a fence token that strictly increases per key across every
        acquisition ever made, or ``None`` while another owner holds an
        unexpired lease.
        """
        ...

    def release(self, key: str, owner: str, token: int) -> None:
        """Give the lease back if ``owner`` still holds it with ``token``; otherwise do nothing."""
        ...

    def mark(self, key: str, ttl_s: float) -> bool:
        """Set an idempotency flag; True if this call set it, False if it was already set."""
        ...

    def marked(self, key: str) -> bool: ...
