"""Cache: machine leases with fence tokens, and idempotency flags.

``Cache`` is the plain key-value lease store every backend offers; the step gate's batch
interface is ``handlers.cache.steps.StepCache`` (a plain ``Cache`` serves it through
``handlers.cache.composed.ComposedSteps``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Cache(Protocol):
    name: str

    def acquire(self, key: str, owner: str, ttl_s: float, floor: int = 0) -> int | None:
        """Take the lease ``key`` for ``owner`` (re-entrant for the same owner).

        Returns a fence token that strictly increases per key across every
        acquisition ever made, and is at least ``floor``, or ``None`` while another
        owner holds an unexpired lease.
        """
        ...

    def release(self, key: str, owner: str, token: int) -> None:
        """Give the lease back if ``owner`` still holds it with ``token``; otherwise do nothing."""
        ...

    def extend(self, key: str, owner: str, token: int, ttl_s: float) -> bool:
        """Renew the lease for ``ttl_s`` while ``token`` is still the last one issued for ``key`` (no
        acquisition came after it, even if the lease ran out meanwhile); False once it was lost."""
        ...

    def mark(self, key: str, ttl_s: float) -> bool:
        """Set an idempotency flag; True if this call set it, False if it was already set."""
        ...

    def marked(self, key: str) -> bool: ...
