"""Refusing, at start, a cache configured in a way that can silently lose leases or marks.

The step gate survives a cache that forgets step marks (it asks the log), but not one that
evicts leases while their holders work: a second worker then takes the lease and both run the
step. So a Redis whose ``maxmemory-policy`` may evict keys is refused, naming the setting and
the fix, unless ``CACHE_ALLOW_EVICTION`` says the overlap is accepted (then it is a warning).
Memcached always evicts under memory pressure: it is accepted with a warning.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from eventlog.errors import BackendError, SettingsError
from eventlog.settings import Settings

log = logging.getLogger("fsmlog.cache")

SAFE_POLICIES = frozenset({"noeviction"})


@runtime_checkable
class EvictionPolicy(Protocol):
    """A cache that can say how it evicts (Redis, read with INFO since ElastiCache disables CONFIG)."""

    def eviction_policy(self) -> str | None: ...


@runtime_checkable
class AlwaysEvicts(Protocol):
    """A cache that evicts under memory pressure whatever it is told (Memcached)."""

    def evicts_under_pressure(self) -> bool: ...


def check_cache(cache: object, setting: str, settings: Settings) -> str | None:
    """Raise ``SettingsError`` for a cache that may evict leases; return a warning to log, or None."""
    allowed = bool(settings.CACHE_ALLOW_EVICTION)
    if isinstance(cache, AlwaysEvicts) and cache.evicts_under_pressure():
        return (f"{setting}: Memcached evicts keys under memory pressure; an evicted lease lets a second "
                f"worker run a step while its holder still works (marks it forgets cost a log read). "
                f"Fix: a Redis cache with maxmemory-policy noeviction, or DynamoDB")
    if not isinstance(cache, EvictionPolicy):
        return None
    try:
        policy = cache.eviction_policy()
    except BackendError as exc:  # the cache is down at start: failover covers it; check next start
        return f"{setting}: could not read the Redis eviction policy ({exc}); not checked"
    if policy is None or policy in SAFE_POLICIES:
        return None
    message = (f"{setting}: Redis maxmemory-policy is {policy!r}, which can evict leases while their "
               f"holders work (two workers would then run one step) and step marks. Fix: set "
               f"maxmemory-policy to noeviction (on ElastiCache, in the cluster's parameter group)")
    if not allowed:
        raise SettingsError(message + ", or set CACHE_ALLOW_EVICTION: true to accept the overlap")
    return message + " (accepted: CACHE_ALLOW_EVICTION is true)"
