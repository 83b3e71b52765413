"""Limits and budgets shared through Redis as leases: one round trip to admit, one to settle.

Every admitted call holds a lease: a member ``<owner>:<seq>:<reserved nano-USD>`` of its
tier's sorted set, scored by its deadline (the Redis server's clock at admission plus the
call's own deadline plus a margin). The lease is the call's concurrency slot (the set's
size is the tier's calls in flight) and its budget reservation (the tier's ``reserved``
counter is the sum of its leases' amounts). A call that ends settles its lease; a lease
whose owner died, or whose settle never arrived, is reclaimed by the next admission of
its tier once its deadline passes (a bounded batch per admission, so under continuous
traffic too), and remembered an hour so that a settle arriving late still counts the
call's spend exactly once; a first settle whose lease Redis lost (a restart without
persistence) still counts it too.

Tokens per minute are not held: the estimate is taken from the bucket at admission (it
refills by itself) and a settle corrects it to the reported usage, once, through the lease.

Keys of tier T (one hash tag, ``{T}``, so every script touches a single Cluster slot):

- ``<prefix>:limits:{T}:req`` / ``:tok``: request and token buckets (hashes ``l``, ``t``)
- ``<prefix>:limits:{T}:leases``: the leases (sorted set, score = deadline in ms)
- ``<prefix>:limits:{T}:reserved``: nano-USD held by the leases
- ``<prefix>:limits:{T}:reclaimed``: reclaimed leases (score = when they are forgotten)
- ``<prefix>:budget:{T}:<YYYY-MM>``: the month's settled spend in nano-USD (the key earlier
  versions kept their committed spend in, so a rolling upgrade keeps the month's spend)
- ``<prefix>:spend:{T}:lifetime``: the settled spend of all time, which credits are spent by

Both spends have a durable floor (``docs/ledger.md``): the gateway passes the tier's spend
as the API's ledger and reports hold it, and the admission script counts (and stores)
``max(Redis's count, floor)``: a Redis that lost its data (restarted without persistence)
starts again from the durable spend, still in one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
from dataclasses import dataclass, field

from tiergate_contract import Budget, Credits, Limits

from .budget import thresholds
from .credits import credit_thresholds
from .limits import ratelimit_headers
from .redis_client import RedisClient

__all__ = ["Grant", "RedisLeases", "lease_owner"]

_log = logging.getLogger("tiergate_gateway")

# Leases reclaimed per admission at most: bounds one script's work (a crashed gateway's
# thousand leases take ten admissions).
_RECLAIM_BATCH = 100
_REMEMBER_RECLAIMED_MS = 3_600_000

# KEYS: 1 requests bucket, 2 tokens bucket, 3 leases, 4 reserved, 5 month's spend, 6 reclaimed,
#       7 lifetime spend.
# ARGV: 1 rpm, 2 tpm, 3 concurrency (0 = unlimited), 4 tokens, 5 reservation (nano-USD),
#       6 hard limit (nano-USD, -1 = no budget), 7 soft limit, 8 lease, 9 lease ms,
#       10 reclaim batch, 11 remember reclaimed ms, 12 the month's durable spend (floor),
#       13 credits granted (nano-USD, -1 = no credits), 14 warn below (credits left),
#       15 the lifetime durable spend (floor).
# Returns {allowed, refused (0 none, 1 requests, 2 tokens, 3 concurrency, 4 budget, 5 credits),
#          req remaining*1000, req reset ms, tok remaining*1000, tok reset ms, retry ms,
#          warn (0/1), committed nano-USD, credits left nano-USD, credits warn (0/1)}.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, tpm, conc, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local nano, hard, soft = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[10]))
if #expired > 0 then
  local freed = 0
  for _, lease in ipairs(expired) do
    freed = freed + tonumber(string.match(lease, ':(%d+)$'))
    redis.call('ZADD', KEYS[6], now + tonumber(ARGV[11]), lease)
  end
  redis.call('ZREM', KEYS[3], unpack(expired))
  if freed > 0 then redis.call('DECRBY', KEYS[4], freed) end
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
end
local held = redis.call('ZCARD', KEYS[3])
if held == 0 then redis.call('DEL', KEYS[4]) end
if conc > 0 and held >= conc then return {0, 3, 0, 0, 0, 0, 1000, 0, 0, 0, 0} end
local function load(key, cap)
  local v = redis.call('HMGET', key, 'l', 't')
  local level, ts = tonumber(v[1]), tonumber(v[2])
  if level == nil then return cap end
  return math.min(cap, level + (now - ts) * cap / 60000)
end
local function reset(level, cap) return math.max(0, (cap - level) * 60000 / cap) end
local rl, tl = 0, 0
if rpm > 0 then
  rl = load(KEYS[1], rpm)
  if rl < 1 then
    return {0, 1, math.floor(rl * 1000), math.ceil(reset(rl, rpm)), 0, 0, math.ceil((1 - rl) * 60000 / rpm), 0, 0, 0, 0}
  end
end
if tpm > 0 then
  tl = load(KEYS[2], tpm)
  if tokens > tl then
    local retry = 60000
    if tokens <= tpm then retry = math.ceil((tokens - tl) * 60000 / tpm) end
    return {0, 2, math.floor(rl * 1000), 0, math.floor(tl * 1000), math.ceil(reset(tl, tpm)), retry, 0, 0, 0, 0}
  end
end
local committed, warn, left, cwarn = 0, 0, 0, 0
local granted = tonumber(ARGV[13])
local reserved = 0
if hard >= 0 or granted >= 0 then reserved = tonumber(redis.call('GET', KEYS[4]) or '0') end
if hard >= 0 then
  local spent = tonumber(redis.call('GET', KEYS[5]) or '0')
  if tonumber(ARGV[12]) > spent then
    redis.call('SET', KEYS[5], ARGV[12], 'EX', 3456000)
    spent = tonumber(ARGV[12])
  end
  committed = spent + reserved
  if committed + nano > hard then return {0, 4, 0, 0, 0, 0, 0, 1, committed, 0, 0} end
  committed = committed + nano
  if committed > soft then warn = 1 end
end
if granted >= 0 then
  local spent = tonumber(redis.call('GET', KEYS[7]) or '0')
  if tonumber(ARGV[15]) > spent then
    redis.call('SET', KEYS[7], ARGV[15])
    spent = tonumber(ARGV[15])
  end
  local used = spent + reserved
  if used + nano > granted then return {0, 5, 0, 0, 0, 0, 0, 0, committed, granted - used, 1} end
  left = granted - used - nano
  if left < tonumber(ARGV[14]) then cwarn = 1 end
end
if tpm > 0 then
  tl = tl - tokens
  redis.call('HSET', KEYS[2], 'l', tostring(tl), 't', now)
  redis.call('PEXPIRE', KEYS[2], 120000)
end
if rpm > 0 then
  rl = rl - 1
  redis.call('HSET', KEYS[1], 'l', tostring(rl), 't', now)
  redis.call('PEXPIRE', KEYS[1], 120000)
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[9]), ARGV[8])
if nano > 0 then redis.call('INCRBY', KEYS[4], nano) end
local rr, tr = 0, 0
if rpm > 0 then rr = reset(rl, rpm) end
if tpm > 0 then tr = reset(tl, tpm) end
return {1, 0, math.floor(rl * 1000), math.ceil(rr), math.floor(tl * 1000), math.ceil(tr), 0, warn, committed, left, cwarn}
"""

# KEYS: 1 tokens bucket, 2 leases, 3 reserved, 4 month's spend, 5 reclaimed, 6 lifetime spend.
# ARGV: 1 lease, 2 its reservation (nano-USD), 3 tpm (0 = unlimited), 4 tokens to give back
#       (estimate - actual), 5 cost (nano-USD), 6 a retry (1) or the first try (0).
# Returns 1 (settled), 2 (settled after its lease was reclaimed), 3 (settled, its lease unknown:
# Redis lost it, e.g. restarted without persistence) or 0 (nothing: a retry of a settle that
# got through, or whose lease Redis lost: the one case left uncounted, not to count twice).
_SETTLE = """
local outcome = 1
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  local nano = tonumber(ARGV[2])
  if nano > 0 and redis.call('DECRBY', KEYS[3], nano) <= 0 then redis.call('DEL', KEYS[3]) end
  if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('DEL', KEYS[3]) end
elseif redis.call('ZREM', KEYS[5], ARGV[1]) == 1 then
  outcome = 2
elseif ARGV[6] == '0' then
  outcome = 3
else
  return 0
end
local tpm, delta = tonumber(ARGV[3]), tonumber(ARGV[4])
if tpm > 0 and delta ~= 0 then
  local v = redis.call('HMGET', KEYS[1], 'l', 't')
  if v[1] then
    redis.call('HSET', KEYS[1], 'l', tostring(math.min(tpm, tonumber(v[1]) + delta)))
  end
end
local cost = tonumber(ARGV[5])
if cost > 0 then
  redis.call('INCRBY', KEYS[4], cost)
  redis.call('EXPIRE', KEYS[4], 3456000)
  redis.call('INCRBY', KEYS[6], cost)
end
return outcome
"""

_REFUSED = {0: "", 1: "requests", 2: "tokens", 3: "concurrency", 4: "budget", 5: "credits"}


def lease_owner() -> str:
    """Who holds this process's leases: the host (a pod's name), the pid and a random tag."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


@dataclass(slots=True)
class Grant:
    """The answer to an admission: allowed (with a lease) or refused by ``limit``."""

    allowed: bool
    limit: str = ""  # what refused: requests | tokens | concurrency | budget | credits
    headers: list[tuple[str, str]] = field(default_factory=list)
    retry_after: float = 0.0
    warn: bool = False  # above the soft budget
    lease: str = ""  # empty: nothing held (the tier has no limit, no budget and no credits)
    credits_warn: bool = False  # the credits left are below the tier's warning threshold
    credits_left: int = 0  # nano-USD, this call's reservation taken


class RedisLeases:
    """The Redis side of admission: see the module docstring."""

    def __init__(
        self,
        redis: RedisClient,
        owner: str | None = None,
        prefix: str = "tiergate",
        retry_seconds: float = 60.0,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self.owner = owner or lease_owner()
        self._seq = itertools.count(1)
        self._admit = redis.register_script(_ADMIT)
        self._settle = redis.register_script(_SETTLE)
        self._thresholds: dict[int, tuple[Budget, tuple[int, int]]] = {}
        self._credit_thresholds: dict[int, tuple[Credits, tuple[int, int]]] = {}
        self._retry_seconds = retry_seconds
        self._retries: set[asyncio.Task[None]] = set()
        self.errors = redis.errors

    def keys(self, tier: str, month: str) -> list[str]:
        """requests, tokens, leases, reserved, the month's spend, reclaimed, lifetime spend."""
        limits = f"{self._prefix}:limits:{{{tier}}}"
        return [
            f"{limits}:req",
            f"{limits}:tok",
            f"{limits}:leases",
            f"{limits}:reserved",
            f"{self._prefix}:budget:{{{tier}}}:{month}",
            f"{limits}:reclaimed",
            f"{self._prefix}:spend:{{{tier}}}:lifetime",
        ]

    def _credits_of(self, credits: Credits) -> tuple[int, int]:
        cached = self._credit_thresholds.get(id(credits))
        if cached is None or cached[0] is not credits:
            cached = self._credit_thresholds[id(credits)] = (credits, credit_thresholds(credits))
        return cached[1]

    def _limits_of(self, budget: Budget) -> tuple[int, int]:
        cached = self._thresholds.get(id(budget))
        if cached is None or cached[0] is not budget:
            cached = self._thresholds[id(budget)] = (budget, thresholds(budget))
        return cached[1]

    async def admit(
        self,
        tier: str,
        limits: Limits,
        budget: Budget | None,
        month: str,
        tokens: int,
        reserve_nano: int,
        lease_seconds: float,
        credits: Credits | None = None,
        month_floor: int = 0,
        lifetime_floor: int = 0,
    ) -> Grant:
        """Check every limit, the budget and the credits and take them all under one lease,
        or refuse. The floors are the tier's durable spend (the month's, of all time)."""
        rpm = limits.requests_per_minute or 0
        tpm = limits.tokens_per_minute or 0
        conc = limits.concurrent_requests or 0
        if not (rpm or tpm or conc or budget or credits):
            return Grant(True)
        hard, soft = self._limits_of(budget) if budget is not None else (-1, -1)
        granted, warn_below = self._credits_of(credits) if credits is not None else (-1, 0)
        nano = reserve_nano if budget is not None or credits is not None else 0
        lease = f"{self.owner}:{next(self._seq)}:{nano}"
        result = await self._admit(
            self.keys(tier, month),
            [
                rpm,
                tpm,
                conc,
                tokens,
                nano,
                hard,
                soft,
                lease,
                int(lease_seconds * 1000),
                _RECLAIM_BATCH,
                _REMEMBER_RECLAIMED_MS,
                month_floor,
                granted,
                warn_below,
                lifetime_floor,
            ],
        )
        allowed, refused, req_rem, req_reset, tok_rem, tok_reset, retry, warn, _, left, cwarn = (
            int(x) for x in result
        )
        headers: list[tuple[str, str]] = []
        if refused not in (3, 4):
            if rpm and refused != 2:
                headers += ratelimit_headers("requests", rpm, req_rem / 1000, req_reset / 1000)
            if tpm and refused != 1:
                headers += ratelimit_headers("tokens", tpm, tok_rem / 1000, tok_reset / 1000)
        return Grant(
            bool(allowed),
            _REFUSED[refused],
            headers,
            retry / 1000,
            bool(warn),
            lease if allowed else "",
            bool(cwarn),
            left,
        )

    async def settle(
        self,
        tier: str,
        limits: Limits,
        month: str,
        lease: str,
        tokens_back: int,
        cost_nano: int,
        retry: bool = False,
    ) -> int:
        """End a lease: free its slot and reservation, correct the tokens, add the cost.

        Once per lease: 1 settled, 2 settled after its lease was reclaimed (the call outlived
        its deadline), 3 settled though Redis lost the lease (restarted without persistence),
        0 nothing (a ``retry`` whose first try got through, or whose lease Redis lost).
        """
        if not lease:
            return 1
        reserved = int(lease.rpartition(":")[2])
        keys = self.keys(tier, month)
        del keys[0]
        outcome = int(
            await self._settle(
                keys,
                [
                    lease,
                    reserved,
                    limits.tokens_per_minute or 0,
                    tokens_back,
                    cost_nano,
                    1 if retry else 0,
                ],
            )
        )
        if outcome == 2:
            _log.warning("a call of tier %s was settled after its lease was reclaimed", tier)
        return outcome

    def settle_later(
        self, tier: str, limits: Limits, month: str, lease: str, tokens_back: int, cost_nano: int
    ) -> None:
        """Retry a settle that failed, with backoff, for ``retry_seconds``: it is idempotent, and
        the lease frees the slot and the reservation at its deadline meanwhile anyway."""

        async def retry() -> None:
            loop = asyncio.get_running_loop()
            give_up = loop.time() + self._retry_seconds
            pause = 0.1
            while True:
                await asyncio.sleep(pause)
                try:
                    await self.settle(tier, limits, month, lease, tokens_back, cost_nano, True)
                    return
                except self.errors as exc:
                    if loop.time() + pause > give_up:
                        _log.error(
                            "settling a call of tier %s failed for %.0fs, its spend (%d nano-USD)"
                            " is lost: %s",
                            tier,
                            self._retry_seconds,
                            cost_nano,
                            type(exc).__name__,
                        )
                        return
                pause = min(pause * 2, 5.0)

        task = asyncio.get_running_loop().create_task(retry())
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def close(self) -> None:
        """Wait briefly for pending settle retries, then drop them (their leases expire)."""
        if self._retries:
            _, pending = await asyncio.wait(set(self._retries), timeout=1.0)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def held(self, tier: str) -> tuple[int, int]:
        """(leases held, nano-USD they reserve) of a tier, expired ones included until reclaimed."""
        keys = self.keys(tier, "-")
        count = await self._redis.execute("ZCARD", keys[2])
        reserved = await self._redis.execute("GET", keys[3])
        return int(count), int(reserved or 0)

    async def spent(self, tier: str, month: str) -> int:
        """The month's settled spend of a tier, in nano-USD."""
        return int(await self._redis.execute("GET", self.keys(tier, month)[4]) or 0)

    async def lifetime(self, tier: str) -> int:
        """The settled spend of all time of a tier that Redis holds, in nano-USD."""
        return int(await self._redis.execute("GET", self.keys(tier, "-")[6]) or 0)
