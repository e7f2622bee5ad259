"""Redis cache (Elasticache for Redis or any redis:// server): leases and flags in one round trip each.

Keys (``fsmlog:`` is the default prefix): ``fsmlog:{<key>}:lease`` holds ``"<token>:<owner>"`` with a PX expiry and
``fsmlog:{<key>}:fence`` is the fence counter, which never expires. The braces
are a cluster hash tag, so both keys of one lease live in the same slot and one
Lua script can touch both atomically. A token is ``max(counter + 1, floor)``, the
floor derived from the record in hand (``handlers.cache.steps.token_floor``), so a
counter lost with a restart, a flush or a failover starts again above every token
issued for an earlier attempt of the machine.

The step gate's store (``handlers.cache.steps.StepCache``) sends a whole batch as one
pipeline of scripts: one round trip to begin, one to end. Beside the lease of
``lease:<cid>`` (the same lease and fence counter ``acquire`` uses, so mixing
the paths never hands out a smaller token) live, in the same hash slot:

* ``fsmlog:{lease:<cid>}:done``, the machine's done high-water mark: the
  greatest ``steps`` marked done, kept for the dedupe window (PX, renewed on
  every mark). A machine's steps only grow, so once step n is done every
  record with ``steps <= n`` is a redelivery or a duplicate: one number covers
  them all. It is only ever raised while it lives; once expired (or evicted) the
  gate reads its absence as "no knowledge" and asks the log.
* ``fsmlog:{lease:<cid>}:abort``: set (PX) while the machine is aborted.

They are apart from the ``flag:done:<cid>:<steps>`` / ``flag:abort:<cid>`` flags
of the composed path, which ``begin_step`` does not see (the engine uses one
path per cache; the flags' keys carry no hash tag, so a script could not read
them on a cluster anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from eventlog.errors import BackendError, ServiceUnavailable, SettingsError
from eventlog.settings import Settings

from .steps import Ending, StepKey, StepView

PREFIX = "fsmlog:"

# the lease take shared by every script: KEYS[1] lease, KEYS[2] fence counter; ARGV[1] owner, ARGV[2] ttl ms,
# ARGV[3] the token floor. Returns the token, or -1 while another owner holds the lease.
_TAKE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  if string.sub(cur, sep + 1) ~= ARGV[1] then
    return -1
  end
end
local counter = redis.call('GET', KEYS[2])
local token
if counter and tonumber(counter) >= tonumber(ARGV[3]) then
  token = redis.call('INCR', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[3])
  token = tonumber(ARGV[3])
end
redis.call('SET', KEYS[1], string.format('%d', token) .. ':' .. ARGV[1], 'PX', ARGV[2])
return token
"""

_ACQUIRE = "local function take()" + _TAKE + "end\nreturn take()"

# take the lease, then read the done mark (KEYS[3]) and the abort flag (KEYS[4]):
# {token or -1, mark or -2 (none; -1 is a registered new machine), aborted}
_BEGIN_STEP = "local function take()" + _TAKE + """end
local token = take()
if token < 0 then
  return {-1, -2, 0}
end
local hw = redis.call('GET', KEYS[3])
if not hw then
  hw = -2
end
return {token, tonumber(hw), redis.call('EXISTS', KEYS[4])}
"""

# raise the done mark (when ARGV[4] is '1'; never lower while it lives), THEN release when still held
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

# renew the lease (KEYS[1]) while no acquisition came after ours: the fence counter (KEYS[2]) still equals
# our token (ARGV[1]), even if the lease ran out meanwhile
_EXTEND = """
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
  return 1
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
    endpoint = (settings.ENDPOINTS or {}).get(target)
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
        self._extend = self._client.register_script(_EXTEND)

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

    def _batch(self, what: str, calls: list[tuple[Any, list, list]]) -> list[Any]:
        """Run ``(script, keys, args)`` calls in one pipeline: one round trip for a whole batch."""
        if not calls:
            return []

        def send() -> list[Any]:
            with self._client.pipeline(transaction=False) as pipe:
                for script, keys, args in calls:  # EVALSHA directly: redis-py's Script would ask SCRIPT EXISTS first
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                return pipe.execute()

        def run() -> list[Any]:
            try:
                return send()
            except self._redis.exceptions.NoScriptError:  # a restarted or flushed server: load, send again
                for script in {id(c[0]): c[0] for c in calls}.values():
                    self._client.script_load(script.script)
                return send()

        return self._call(what, run)

    def acquire(self, key: str, owner: str, ttl_s: float, floor: int = 0) -> int | None:
        token = self._call("acquire", self._acquire, keys=list(self._keys(key)),
                           args=[owner, _ms(ttl_s), max(1, int(floor))])
        return None if int(token) < 0 else int(token)

    def release(self, key: str, owner: str, token: int) -> None:
        lease, _ = self._keys(key)
        self._call("release", self._release, keys=[lease], args=[f"{token}:{owner}"])

    def extend(self, key: str, owner: str, token: int, ttl_s: float) -> bool:
        return bool(self._call("extend", self._extend, keys=list(self._keys(key)),
                               args=[int(token), owner, _ms(ttl_s)]))

    def _gate_keys(self, cid: str) -> tuple[str, str, str, str]:
        """lease, fence, done mark, abort flag of machine ``cid``: one hash tag, one slot."""
        lease, fence = self._keys(f"lease:{cid}")
        return lease, fence, f"{self.prefix}{{lease:{cid}}}:done", f"{self.prefix}{{lease:{cid}}}:abort"

    def begin_steps(self, items: Sequence[StepKey], owner: str, ttl_s: float) -> list[StepView]:
        """Take each lease as ``acquire`` does and read the done mark and abort flag: one pipeline."""
        answers = self._batch("begin_steps", [
            (self._begin_step, list(self._gate_keys(k.cid)), [owner, _ms(ttl_s), max(1, k.floor)]) for k in items])
        out = []
        for token, mark, aborted in answers:
            if int(token) < 0:
                out.append(StepView(None, None, False))
            else:
                out.append(StepView(int(token), None if int(mark) < -1 else int(mark), bool(int(aborted))))
        return out

    def peek_steps(self, items: Sequence[StepKey]) -> list[StepView]:
        def run() -> list[Any]:
            with self._client.pipeline(transaction=False) as pipe:
                for key in items:
                    _, _, done, abort = self._gate_keys(key.cid)
                    pipe.get(done)
                    pipe.exists(abort)
                return pipe.execute()

        answers = self._call("peek_steps", run) if items else []
        return [StepView(None, None if mark is None else int(mark), bool(int(aborted)))
                for mark, aborted in zip(answers[0::2], answers[1::2])]

    def end_steps(self, items: Sequence[Ending], owner: str, dedupe_s: float) -> None:
        """Raise each done mark (when marked), then release each lease still held: one pipeline.
        A stale holder's mark still counts (its step's next record was appended)."""
        calls = []
        for e in items:
            lease, _, mark, _ = self._gate_keys(e.cid)
            calls.append((self._end_step, [lease, mark],
                          [owner, -1 if e.token is None else int(e.token), e.handled_upto(),
                           "1" if e.mark is not None else "0", _ms(dedupe_s)]))
        self._batch("end_steps", calls)

    def renew_leases(self, items: Sequence[tuple[str, int]], owner: str, ttl_s: float) -> list[bool]:
        answers = self._batch("renew_leases", [
            (self._extend, list(self._gate_keys(cid)[:2]), [int(token), owner, _ms(ttl_s)]) for cid, token in items])
        return [bool(int(a)) for a in answers]

    def check_leases(self, items: Sequence[tuple[str, int]], owner: str, ttl_s: float) -> list[bool]:
        """The fence counters of a batch's machines: one pipeline of GETs."""
        def run() -> list[Any]:
            with self._client.pipeline(transaction=False) as pipe:
                for cid, _ in items:
                    pipe.get(self._gate_keys(cid)[1])
                return pipe.execute()

        answers = self._call("check_leases", run) if items else []
        return [value is not None and int(value) == int(token) for (_, token), value in zip(items, answers)]

    def abort_machine(self, cid: str, dedupe_s: float) -> None:
        """Flag the machine aborted for ``dedupe_s``: one SET."""
        self._call("abort_machine", self._client.set, self._gate_keys(cid)[3], b"1", px=_ms(dedupe_s))

    def eviction_policy(self) -> str | None:
        """The server's ``maxmemory-policy``, read with INFO (ElastiCache disables CONFIG)."""
        info = self._call("info", self._client.info, "memory")
        policy = info.get("maxmemory_policy") if isinstance(info, dict) else None
        return str(policy) if policy is not None else None

    def mark(self, key: str, ttl_s: float) -> bool:
        return bool(self._call("mark", self._client.set, f"{self.prefix}flag:{key}", b"1", nx=True, px=_ms(ttl_s)))

    def marked(self, key: str) -> bool:
        return bool(self._call("marked", self._client.exists, f"{self.prefix}flag:{key}"))

    def close(self) -> None:
        self._client.close()
