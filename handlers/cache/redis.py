"""Redis cache (Elasticache for Redis or any redis:// server): leases and flags in one round trip each.

Keys (``fsmlog:`` is the default prefix): ``fsmlog:{<key>}:lease`` holds ``"<token>:<owner>"`` with a PX expiry and
``fsmlog:{<key>}:fence`` is the fence counter, which never expires. The braces
are a cluster hash tag, so both keys of one lease live in the same slot and one
Lua script can touch both atomically. Should the counter ever be lost (a server
restarted without persistence), the script re-seeds it from the server clock in
microseconds, so tokens keep increasing as long as fewer than a million
acquisitions per second happened before the loss.

The step gate's fast path (``begin_step`` / ``end_step`` / ``abort_machine``,
see ``handlers.gate``) is one round trip each. Beside the lease of
``lease:<cid>`` (the same lease and fence counter ``acquire`` uses, so mixing
the paths never hands out a smaller token) live, in the same hash slot:

* ``fsmlog:{lease:<cid>}:done``, the machine's done high-water mark: the
  greatest ``steps`` marked done, kept for the dedupe window (PX, renewed on
  every mark). A machine's steps only grow, so once step n is done every
  record with ``steps <= n`` is a redelivery or a duplicate: one number covers
  them all. It is only ever raised while it lives; once expired it may start
  again lower, as an expired flag may be set again.
* ``fsmlog:{lease:<cid>}:abort``: set (PX) while the machine is aborted.

They are apart from the ``flag:done:<cid>:<steps>`` / ``flag:abort:<cid>`` flags
of the composed path, which ``begin_step`` does not see (the engine uses one
path per cache; the flags' keys carry no hash tag, so a script could not read
them on a cluster anyway).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from eventlog.errors import BackendError, ServiceUnavailable, SettingsError
from eventlog.settings import Settings

PREFIX = "fsmlog:"

_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  if string.sub(cur, sep + 1) ~= ARGV[1] then
    return -1
  end
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2])))
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], string.format('%d', token) .. ':' .. ARGV[1], 'PX', ARGV[2])
return token
"""

# _ACQUIRE's take (KEYS 1-2, ARGV 1-2), then the done mark (KEYS[3] >= ARGV[3]) and the abort flag (KEYS[4]):
# returns {token or -1, done, aborted}
_BEGIN_STEP = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  if string.sub(cur, sep + 1) ~= ARGV[1] then
    return {-1, 0, 0}
  end
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2])))
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], string.format('%d', token) .. ':' .. ARGV[1], 'PX', ARGV[2])
local hw = redis.call('GET', KEYS[3])
local done = 0
if hw and tonumber(hw) >= tonumber(ARGV[3]) then
  done = 1
end
return {token, done, redis.call('EXISTS', KEYS[4])}
"""

# raise the done mark (when ARGV[4] is '1'; never lower while it lives), then release when still held
_END_STEP = """
if ARGV[4] == '1' then
  local hw = tonumber(ARGV[3])
  local cur = redis.call('GET', KEYS[2])
  if cur and tonumber(cur) > hw then
    hw = tonumber(cur)
  end
  redis.call('SET', KEYS[2], string.format('%d', hw), 'PX', ARGV[5])
end
if redis.call('GET', KEYS[1]) == ARGV[2] .. ':' .. ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _ms(ttl_s: float) -> int:
    return max(1, int(ttl_s * 1000))


def elasticache_url(target: str, settings: Settings, scheme: str) -> str:
    """The ``redis://`` or ``memcached://`` URL a setting value points at.

    URLs pass through; an Elasticache ARN is looked up in ``ENDPOINTS`` first
    (local emulators, or to skip the lookup), then asked of Elasticache itself.
    """
    if target.startswith(scheme + "://") or (scheme == "redis" and target.startswith("rediss://")):
        return target
    endpoint = (settings.get("ENDPOINTS") or {}).get(target)
    if endpoint:
        return str(endpoint)
    parts = target.split(":")
    if len(parts) < 7 or parts[0] != "arn" or parts[2] != "elasticache":
        raise SettingsError(
            f"cache source {target!r} is neither a {scheme}:// URL nor an Elasticache ARN "
            f"(arn:aws:elasticache:<region>:<account>:cluster:<id> or :replicationgroup:<id>)"
        )
    return _describe_endpoint(target, parts[5], parts[6], settings, scheme)


def _describe_endpoint(target: str, kind: str, ident: str, settings: Settings, scheme: str) -> str:
    from eventlog.aws import call, client

    ec = client("elasticache", target, settings)
    if kind == "replicationgroup":
        group = call(ec.describe_replication_groups, ReplicationGroupId=ident)["ReplicationGroups"][0]
        endpoint = group.get("ConfigurationEndpoint") or group["NodeGroups"][0]["PrimaryEndpoint"]
    elif kind == "cluster":
        cluster = call(ec.describe_cache_clusters, CacheClusterId=ident, ShowCacheNodeInfo=True)["CacheClusters"][0]
        endpoint = cluster.get("ConfigurationEndpoint") or cluster["CacheNodes"][0]["Endpoint"]
    else:
        raise SettingsError(f"Elasticache ARN {target!r} names a {kind!r}; expected cluster or replicationgroup")
    return f"{scheme}://{endpoint['Address']}:{endpoint['Port']}"


class RedisCache:
    """Leases with fence tokens and idempotency flags on Redis."""

    def __init__(self, url: str, *, name: str | None = None, socket_timeout: float = 2.0,
                 prefix: str = PREFIX) -> None:
        import redis

        self.name = name or url
        self.prefix = prefix
        self._redis = redis
        self._client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
        )
        self._acquire = self._client.register_script(_ACQUIRE)
        self._release = self._client.register_script(_RELEASE)
        self._begin_step = self._client.register_script(_BEGIN_STEP)
        self._end_step = self._client.register_script(_END_STEP)

    @classmethod
    def from_target(cls, target: str, settings: Settings) -> RedisCache:
        url = elasticache_url(target, settings, "redis")
        if urlparse(url).scheme not in ("redis", "rediss"):
            raise SettingsError(f"cache source {target!r} resolves to {url!r}, which is not a redis:// URL")
        return cls(url, name=target)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        errors = self._redis.exceptions
        try:
            return fn(*args, **kwargs)
        except (errors.ConnectionError, errors.TimeoutError, errors.BusyLoadingError) as exc:
            raise ServiceUnavailable(f"redis {self.name}: {what} failed: {exc}") from exc
        except errors.RedisError as exc:
            raise BackendError(f"redis {self.name}: {what} failed: {exc}") from exc

    def _keys(self, key: str) -> tuple[str, str]:
        return f"{self.prefix}{{{key}}}:lease", f"{self.prefix}{{{key}}}:fence"

    def acquire(self, key: str, owner: str, ttl_s: float) -> int | None:
        token = self._call("acquire", self._acquire, keys=list(self._keys(key)), args=[owner, _ms(ttl_s)])
        return None if int(token) < 0 else int(token)

    def release(self, key: str, owner: str, token: int) -> None:
        lease, _ = self._keys(key)
        self._call("release", self._release, keys=[lease], args=[f"{token}:{owner}"])

    def _gate_keys(self, cid: str) -> tuple[str, str, str, str]:
        """lease, fence, done mark, abort flag of machine ``cid``: one hash tag, one slot."""
        lease, fence = self._keys(f"lease:{cid}")
        return lease, fence, f"{self.prefix}{{lease:{cid}}}:done", f"{self.prefix}{{lease:{cid}}}:abort"

    def begin_step(self, cid: str, steps: int, owner: str, ttl_s: float) -> tuple[int | None, bool, bool]:
        """Take ``lease:<cid>`` as ``acquire`` does and read the done mark and abort flag: one script."""
        token, done, aborted = self._call("begin_step", self._begin_step, keys=list(self._gate_keys(cid)),
                                          args=[owner, _ms(ttl_s), int(steps)])
        if int(token) < 0:
            return None, False, False
        return int(token), bool(int(done)), bool(int(aborted))

    def end_step(self, cid: str, steps: int, owner: str, token: int, done: bool, dedupe_s: float) -> None:
        """Raise the done mark to ``steps`` (when done) and release the lease if ``(owner, token)`` still hold
        it: one script. A stale holder's mark still counts (its step's next record was appended)."""
        lease, _, mark, _ = self._gate_keys(cid)
        self._call("end_step", self._end_step, keys=[lease, mark],
                   args=[owner, int(token), int(steps), "1" if done else "0", _ms(dedupe_s)])

    def abort_machine(self, cid: str, dedupe_s: float) -> None:
        """Flag the machine aborted for ``dedupe_s``: one SET."""
        self._call("abort_machine", self._client.set, self._gate_keys(cid)[3], b"1", px=_ms(dedupe_s))

    def mark(self, key: str, ttl_s: float) -> bool:
        return bool(self._call("mark", self._client.set, f"{self.prefix}flag:{key}", b"1", nx=True, px=_ms(ttl_s)))

    def marked(self, key: str) -> bool:
        return bool(self._call("marked", self._client.exists, f"{self.prefix}flag:{key}"))

    def close(self) -> None:
        self._client.close()
