"""A cache with only the basic ``Cache`` calls (as Memcached has), for tests of the composed step gate."""

from __future__ import annotations

from typing import Any


class PlainCache:
    """A cache side with only the basic ``Cache`` calls, as Memcached has: the gate composes its
    per-step flags (``handlers.cache.composed.ComposedSteps``) instead of a high-water mark."""

    def __init__(self, cache: Any) -> None:
        self.wrapped = cache
        self.name = cache.name

    def acquire(self, key: str, owner: str, ttl_s: float, floor: int = 0) -> int | None:
        return self.wrapped.acquire(key, owner, ttl_s, floor)

    def release(self, key: str, owner: str, token: int) -> None:
        self.wrapped.release(key, owner, token)

    def extend(self, key: str, owner: str, token: int, ttl_s: float) -> bool:
        return self.wrapped.extend(key, owner, token, ttl_s)

    def mark(self, key: str, ttl_s: float) -> bool:
        return self.wrapped.mark(key, ttl_s)

    def marked(self, key: str) -> bool:
        return self.wrapped.marked(key)

    def close(self) -> None:
        self.wrapped.close()
