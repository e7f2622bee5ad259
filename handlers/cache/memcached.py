"""Memcached cache (Elasticache for Memcached or any memcached:// server).

Memcached has no scripts, so a lease is built from its atomic primitives:
``add`` takes a free lease, ``gets``/``cas`` re-takes one we hold or gives it
back, and ``incr`` on a counter key stored without expiry yields the fence
token. Memcached may still evict that counter under memory pressure or lose it
on restart, and evict flags: the step gate then finds no knowledge of the machine and
asks the log before it runs anything, and the counter starts again from the floor the
record in hand gives (``handlers.cache.steps.token_floor``).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any
from urllib.parse import urlparse

from eventlog.errors import BackendError, ServiceUnavailable, SettingsError
from eventlog.settings import Settings

PREFIX = "fsmlog:"
_THIRTY_DAYS = 30 * 24 * 3600  # memcached reads larger expiries as absolute unix times
_TRIES = 8  # lost add/cas races before giving up on one acquire


def _expire(ttl_s: float) -> int:
    seconds = max(1, int(-(-ttl_s // 1)))  # memcached counts whole seconds: round up
    return int(time.time()) + seconds if seconds > _THIRTY_DAYS else seconds


def _safe(prefix: str, key: str) -> str:
    """Memcached keys are at most 250 bytes without spaces or control characters."""
    full = prefix + key
    raw = full.encode()
    if len(raw) > 240 or any(b <= 32 or b == 127 for b in raw):
        return prefix + "h:" + hashlib.sha256(raw).hexdigest()
    return full


class MemcachedCache:
    """Leases with fence tokens and idempotency flags on Memcached."""

    def __init__(self, url: str, *, name: str | None = None, timeout: float = 2.0, prefix: str = PREFIX) -> None:
        from pymemcache.client.base import PooledClient

        parsed = urlparse(url)
        if parsed.scheme != "memcached" or not parsed.hostname:
            raise SettingsError(f"cache source {name or url!r}: {url!r} is not a memcached://host:port URL")
        self.name = name or url
        self.prefix = prefix
        self._client = PooledClient(
            (parsed.hostname, parsed.port or 11211),
            connect_timeout=timeout,
            timeout=timeout,
            no_delay=True,
            default_noreply=False,
        )

    @classmethod
    def from_target(cls, target: str, settings: Settings) -> MemcachedCache:
        from .redis import elasticache_url

        return cls(elasticache_url(target, settings, "memcached"), name=target)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from pymemcache.exceptions import MemcacheError, MemcacheUnexpectedCloseError

        try:
            return fn(*args, **kwargs)
        except (OSError, MemcacheUnexpectedCloseError) as exc:
            raise ServiceUnavailable(f"memcached {self.name}: {what} failed: {exc}") from exc
        except MemcacheError as exc:
            raise BackendError(f"memcached {self.name}: {what} failed: {exc}") from exc

    def _next_token(self, key: str, floor: int) -> int:
        """``max(counter + 1, floor)``, compare-and-set: a counter memcached evicted or lost in a
        restart starts again from the floor the record in hand gives (``handlers.cache.steps``)."""
        counter = _safe(self.prefix, f"fence:{key}")
        floor = max(1, int(floor))
        for _ in range(_TRIES):
            value, cas = self._call("gets", self._client.gets, counter)
            if value is None:
                if self._call("add", self._client.add, counter, str(floor).encode(), expire=0):
                    return floor
                continue
            token = max(int(value) + 1, floor)
            if self._call("cas", self._client.cas, counter, str(token).encode(), cas, expire=0):
                return token
        raise BackendError(f"memcached {self.name}: fence counter for {key!r} lost {_TRIES} races in a row")

    def acquire(self, key: str, owner: str, ttl_s: float, floor: int = 0) -> int | None:
        lease = _safe(self.prefix, f"lease:{key}")
        for _ in range(_TRIES):
            value, cas = self._call("gets", self._client.gets, lease)
            if value:
                _, _, holder = value.decode().partition(":")
                if holder != owner:
                    return None
            token = self._next_token(key, floor)
            held = f"{token}:{owner}".encode()
            if value is None:
                if self._call("add", self._client.add, lease, held, expire=_expire(ttl_s)):
                    return token
            elif self._call("cas", self._client.cas, lease, held, cas, expire=_expire(ttl_s)):
                return token
            # lost a race with another acquire/release; look again
        raise BackendError(f"memcached {self.name}: acquire of {key!r} lost {_TRIES} races in a row")

    def release(self, key: str, owner: str, token: int) -> None:
        lease = _safe(self.prefix, f"lease:{key}")
        value, cas = self._call("gets", self._client.gets, lease)
        if value == f"{token}:{owner}".encode():
            # memcached's delete takes no cas; a negative expiry makes the overwrite expire at once
            self._call("cas", self._client.cas, lease, b"", cas, expire=-1)

    def extend(self, key: str, owner: str, token: int, ttl_s: float) -> bool:
        """Renew while no acquisition came after ours (the counter is our token), even if it ran out."""
        counter = self._call("get", self._client.get, _safe(self.prefix, f"fence:{key}"))
        if counter is None or int(counter) != int(token):
            return False
        self._call("set", self._client.set, _safe(self.prefix, f"lease:{key}"), f"{token}:{owner}".encode(),
                   expire=_expire(ttl_s))
        return True

    def mark(self, key: str, ttl_s: float) -> bool:
        return bool(self._call("add", self._client.add, _safe(self.prefix, f"flag:{key}"), b"1", expire=_expire(ttl_s)))

    def marked(self, key: str) -> bool:
        return self._call("get", self._client.get, _safe(self.prefix, f"flag:{key}")) is not None

    def evicts_under_pressure(self) -> bool:
        """Memcached has no no-eviction mode (see ``handlers.cache.policy``)."""
        return True

    def close(self) -> None:
        self._client.close()
