"""Per-tier rate limits: requests/min, tokens/min (token buckets) and concurrent requests.

Two backends with one interface: ``LocalLimiter`` (one process) and
``RedisLimiter`` (shared by workers and replicas; each decision is one atomic
Lua script, timed by the Redis server's clock). Tokens are taken for the
estimated prompt before the call and settled with the reported usage after.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tiergate_contract import Limits

__all__ = ["LimitDecision", "Limiter", "LocalLimiter", "RedisLimiter"]


@dataclass(slots=True)
class _Bucket:
    """A token bucket holding up to its capacity (per minute), refilled continuously
    (by ``LocalLimiter.acquire_now``, inline: a method call per bucket cost 0.6% of a request)."""

    level: float
    updated: float


@dataclass(slots=True)
class LimitDecision:
    allowed: bool
    headers: list[tuple[str, str]] = field(default_factory=list)
    retry_after: float = 0.0
    limit: str = ""  # which limit refused: requests | tokens | concurrency


_HEADER_NAMES = {
    kind: (
        f"x-ratelimit-limit-{kind}",
        f"x-ratelimit-remaining-{kind}",
        f"x-ratelimit-reset-{kind}",
    )
    for kind in ("requests", "tokens")
}


def _headers(kind: str, limit: int, remaining: float, reset: float) -> list[tuple[str, str]]:
    """OpenAI's ``x-ratelimit-{limit,remaining,reset}-<kind>`` headers."""
    names = _HEADER_NAMES[kind]
    return [
        (names[0], str(limit)),
        (names[1], str(int(remaining)) if remaining > 0 else "0"),
        (names[2], f"{reset:.3f}s" if reset < 60 else f"{reset / 60:.0f}m"),
    ]


def _bucket_headers(kind: str, capacity: int, level: float) -> list[tuple[str, str]]:
    """``_headers`` for a refilled local bucket (its level is never above its capacity)."""
    names = _HEADER_NAMES[kind]
    reset = (capacity - level) * 60.0 / capacity
    return [
        (names[0], str(capacity)),
        (names[1], str(int(level)) if level > 0 else "0"),
        (names[2], f"{reset:.3f}s" if reset < 60 else f"{reset / 60:.0f}m"),
    ]


class Limiter(Protocol):
    async def acquire(self, tier: str, limits: Limits, tokens: int) -> LimitDecision:
        """Take a request, ``tokens`` (the estimate) and a concurrency slot, or refuse."""
        ...

    async def release(self, tier: str, limits: Limits) -> None:
        """Give back the concurrency slot of an acquired call that never went upstream."""
        ...

    async def finish(self, tier: str, limits: Limits, estimated: int, actual: int) -> None:
        """What every acquired call does when it ends: settle its tokens to ``actual`` and
        give back its concurrency slot."""
        ...


@dataclass(slots=True)
class _TierState:
    requests: _Bucket
    tokens: _Bucket
    inflight: int = 0


class LocalLimiter:
    """In-process limits: exact for one process; no awaits, so every decision is atomic."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tiers: dict[str, _TierState] = {}

    def _state(self, tier: str, now: float) -> _TierState:
        state = self._tiers.get(tier)
        if state is None:
            state = self._tiers[tier] = _TierState(
                # Full at first sight: the first refill caps the level at the capacity.
                _Bucket(math.inf, now),
                _Bucket(math.inf, now),
            )
        return state

    async def acquire(self, tier: str, limits: Limits, tokens: int) -> LimitDecision:
        return self.acquire_now(tier, limits, tokens)

    def acquire_now(self, tier: str, limits: Limits, tokens: int) -> LimitDecision:
        # The hot path of every call: bucket arithmetic inline, one header list per limit.
        now = self._clock()
        state = self._state(tier, now)
        rpm, tpm, conc = (
            limits.requests_per_minute,
            limits.tokens_per_minute,
            limits.concurrent_requests,
        )
        if conc is not None and state.inflight >= conc:
            return LimitDecision(False, [], 1.0, "concurrency")
        requests, bucket = state.requests, state.tokens
        if rpm is not None:
            requests.level = min(rpm, requests.level + (now - requests.updated) * rpm / 60.0)
            requests.updated = now
            if requests.level < 1:
                wait = (1 - requests.level) * 60.0 / rpm
                headers = _bucket_headers("requests", rpm, requests.level)
                return LimitDecision(False, headers, wait, "requests")
        headers = []
        if tpm is not None:
            bucket.level = min(tpm, bucket.level + (now - bucket.updated) * tpm / 60.0)
            bucket.updated = now
            if tokens > bucket.level:
                wait = 60.0 if tokens > tpm else (tokens - bucket.level) * 60.0 / tpm
                headers = _bucket_headers("tokens", tpm, bucket.level)
                return LimitDecision(False, headers, wait, "tokens")
            bucket.level -= tokens
            headers = _bucket_headers("tokens", tpm, bucket.level)
        if rpm is not None:
            requests.level -= 1
            headers = _bucket_headers("requests", rpm, requests.level) + headers
        if conc is not None:
            state.inflight += 1
        return LimitDecision(True, headers)

    async def release(self, tier: str, limits: Limits) -> None:
        state = self._tiers.get(tier)
        if state is not None and limits.concurrent_requests is not None and state.inflight > 0:
            state.inflight -= 1

    async def finish(self, tier: str, limits: Limits, estimated: int, actual: int) -> None:
        state = self._tiers.get(tier)
        if state is None:
            return
        tpm = limits.tokens_per_minute
        if tpm is not None:
            state.tokens.level = min(float(tpm), state.tokens.level + estimated - actual)
        if limits.concurrent_requests is not None and state.inflight > 0:
            state.inflight -= 1


# KEYS: requests bucket, tokens bucket, in-flight counter.
# ARGV: rpm, tpm, concurrency (0 = unlimited), tokens.
# Returns {allowed(0/1), refused limit (0 none, 1 requests, 2 tokens, 3 concurrency),
#          req remaining*1000, req reset ms, tok remaining*1000, tok reset ms, retry ms}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, tpm, conc, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function load(key, cap)
  local v = redis.call('HMGET', key, 'l', 't')
  local level, ts = tonumber(v[1]), tonumber(v[2])
  if level == nil then return cap end
  return math.min(cap, level + (now - ts) * cap / 60000)
end
local function reset(level, cap) return math.max(0, (cap - level) * 60000 / cap) end
if conc > 0 then
  local n = tonumber(redis.call('GET', KEYS[3]) or '0')
  if n >= conc then return {0, 3, 0, 0, 0, 0, 1000} end
end
local rl, tl = 0, 0
if rpm > 0 then
  rl = load(KEYS[1], rpm)
  if rl < 1 then
    return {0, 1, math.floor(rl * 1000), math.ceil(reset(rl, rpm)), 0, 0, math.ceil((1 - rl) * 60000 / rpm)}
  end
end
if tpm > 0 then
  tl = load(KEYS[2], tpm)
  if tokens > tl then
    local retry = 60000
    if tokens <= tpm then retry = math.ceil((tokens - tl) * 60000 / tpm) end
    return {0, 2, math.floor(rl * 1000), 0, math.floor(tl * 1000), math.ceil(reset(tl, tpm)), retry}
  end
  tl = tl - tokens
  redis.call('HSET', KEYS[2], 'l', tostring(tl), 't', now)
  redis.call('PEXPIRE', KEYS[2], 120000)
end
if rpm > 0 then
  rl = rl - 1
  redis.call('HSET', KEYS[1], 'l', tostring(rl), 't', now)
  redis.call('PEXPIRE', KEYS[1], 120000)
end
if conc > 0 then
  redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], 900)
end
local rr, tr = 0, 0
if rpm > 0 then rr = reset(rl, rpm) end
if tpm > 0 then tr = reset(tl, tpm) end
return {1, 0, math.floor(rl * 1000), math.ceil(rr), math.floor(tl * 1000), math.ceil(tr), 0}
"""

# KEYS: tokens bucket, in-flight counter. ARGV: tpm (0 = unlimited), delta, concurrency (0 = unlimited).
_FINISH = """
if tonumber(ARGV[1]) > 0 and tonumber(ARGV[2]) ~= 0 then
  local v = redis.call('HMGET', KEYS[1], 'l', 't')
  if v[1] then
    local level = math.min(tonumber(ARGV[1]), tonumber(v[1]) + tonumber(ARGV[2]))
    redis.call('HSET', KEYS[1], 'l', tostring(level))
  end
end
if tonumber(ARGV[3]) > 0 then
  local n = tonumber(redis.call('GET', KEYS[2]) or '0')
  if n > 0 then redis.call('DECR', KEYS[2]) end
end
return 1
"""

_RELEASE = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""


class RedisLimiter:
    """Limits shared through Redis; the same decisions as ``LocalLimiter``, made atomically by Lua."""

    def __init__(self, redis: Any, prefix: str = "tiergate:limits") -> None:
        self._redis = redis
        self._prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self._finish = redis.register_script(_FINISH)

    def _keys(self, tier: str) -> list[str]:
        base = f"{self._prefix}:{{{tier}}}"
        return [f"{base}:req", f"{base}:tok", f"{base}:inflight"]

    async def acquire(self, tier: str, limits: Limits, tokens: int) -> LimitDecision:
        rpm = limits.requests_per_minute or 0
        tpm = limits.tokens_per_minute or 0
        conc = limits.concurrent_requests or 0
        if not (rpm or tpm or conc):
            return LimitDecision(True)
        result = await self._acquire(keys=self._keys(tier), args=[rpm, tpm, conc, tokens])
        allowed, refused, req_rem, req_reset, tok_rem, tok_reset, retry = (int(x) for x in result)
        headers: list[tuple[str, str]] = []
        if rpm and refused != 2:
            headers += _headers("requests", rpm, req_rem / 1000, req_reset / 1000)
        if tpm and refused != 1:
            headers += _headers("tokens", tpm, tok_rem / 1000, tok_reset / 1000)
        if refused == 3:
            headers = []
        limit = {0: "", 1: "requests", 2: "tokens", 3: "concurrency"}[refused]
        return LimitDecision(bool(allowed), headers, retry / 1000, limit)

    async def release(self, tier: str, limits: Limits) -> None:
        if limits.concurrent_requests is not None:
            await self._release(keys=[self._keys(tier)[2]])

    async def finish(self, tier: str, limits: Limits, estimated: int, actual: int) -> None:
        """Settle tokens and release the concurrency slot in one round trip."""
        tpm = limits.tokens_per_minute or 0
        conc = limits.concurrent_requests or 0
        if (tpm and estimated != actual) or conc:
            _, tokens_key, inflight_key = self._keys(tier)
            await self._finish(
                keys=[tokens_key, inflight_key], args=[tpm, estimated - actual, conc]
            )
