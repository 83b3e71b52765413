"""Per-tier rate limits: requests/min, tokens/min (token buckets) and concurrent requests.

``LocalLimiter`` holds them for one process; shared through Redis (workers and
replicas), the same decisions are made by ``leases.RedisLeases``, together with the
budget, in one Lua script. Tokens are taken for the estimated prompt before the
call and settled with the reported usage after.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tiergate_contract import Limits

__all__ = ["LimitDecision", "Limiter", "LocalLimiter", "ratelimit_headers"]


@dataclass(slots=True)
class _Bucket:
    """A token bucket holding up to its capacity (per minute), refilled continuously
    (by ``LocalLimiter.acquire_now``, inline: a method call per bucket cost 0.6% of a request)."""

    level: float
    updated: float
    # The headers last made for this bucket and the (capacity, level) they show: a bucket
    # refilled to its capacity before each call shows the same ones every time, and
    # formatting them costs more than the rest of the decision.
    shown: tuple[float, float] = (math.nan, math.nan)
    headers: tuple[tuple[str, str], ...] = ()


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


def ratelimit_headers(
    kind: str, limit: int, remaining: float, reset: float
) -> list[tuple[str, str]]:
    """OpenAI's ``x-ratelimit-{limit,remaining,reset}-<kind>`` headers."""
    names = _HEADER_NAMES[kind]
    return [
        (names[0], str(limit)),
        (names[1], str(int(remaining)) if remaining > 0 else "0"),
        (names[2], f"{reset:.3f}s" if reset < 60 else f"{reset / 60:.0f}m"),
    ]


def _bucket_headers(kind: str, capacity: int, level: float) -> tuple[tuple[str, str], ...]:
    """``ratelimit_headers`` for a refilled local bucket (its level is never above its capacity)."""
    names = _HEADER_NAMES[kind]
    reset = (capacity - level) * 60.0 / capacity
    return (
        (names[0], str(capacity)),
        (names[1], str(int(level)) if level > 0 else "0"),
        (names[2], f"{reset:.3f}s" if reset < 60 else f"{reset / 60:.0f}m"),
    )


def _shown(bucket: _Bucket, kind: str, capacity: int) -> tuple[tuple[str, str], ...]:
    """The headers of ``bucket`` at its level, made again only when it changed."""
    shown = (capacity, bucket.level)
    if shown != bucket.shown:
        bucket.shown = shown
        bucket.headers = _bucket_headers(kind, capacity, bucket.level)
    return bucket.headers


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
    # The tier's limits as last seen, and their values copied out (an attribute of a pydantic
    # model costs about 300 instructions more to read than a slot).
    limits: Limits | None = None
    values: tuple[int | None, int | None, int | None] = (None, None, None)


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
        # The hot path of every call: bucket arithmetic inline (a conditional, not ``min``: a
        # builtin call costs more), the headers of an unchanged level reused.
        now = self._clock()
        state = self._tiers.get(tier) or self._state(tier, now)
        if state.limits is not limits:
            state.limits = limits
            state.values = (
                limits.requests_per_minute,
                limits.tokens_per_minute,
                limits.concurrent_requests,
            )
        rpm, tpm, conc = state.values
        if conc is not None and state.inflight >= conc:
            return LimitDecision(False, [], 1.0, "concurrency")
        requests, bucket = state.requests, state.tokens
        if rpm is not None:
            level = requests.level + (now - requests.updated) * rpm / 60.0
            requests.level = level = level if level < rpm else rpm
            requests.updated = now
            if level < 1:
                wait = (1 - level) * 60.0 / rpm
                headers = list(_bucket_headers("requests", rpm, level))
                return LimitDecision(False, headers, wait, "requests")
        shown: tuple[tuple[str, str], ...] = ()
        if tpm is not None:
            level = bucket.level + (now - bucket.updated) * tpm / 60.0
            level = level if level < tpm else tpm
            bucket.updated = now
            if tokens > level:
                bucket.level = level
                wait = 60.0 if tokens > tpm else (tokens - level) * 60.0 / tpm
                headers = list(_bucket_headers("tokens", tpm, level))
                return LimitDecision(False, headers, wait, "tokens")
            bucket.level = level - tokens
            shown = _shown(bucket, "tokens", tpm)
        if conc is not None:
            state.inflight += 1
        if rpm is None:
            return LimitDecision(True, list(shown))
        requests.level -= 1
        return LimitDecision(True, [*_shown(requests, "requests", rpm), *shown])

    async def release(self, tier: str, limits: Limits) -> None:
        state = self._tiers.get(tier)
        if state is not None and limits.concurrent_requests is not None and state.inflight > 0:
            state.inflight -= 1

    async def finish(self, tier: str, limits: Limits, estimated: int, actual: int) -> None:
        state = self._tiers.get(tier)
        if state is None:
            return
        if state.limits is limits:  # the values copied by ``acquire_now``: no pydantic reads
            _, tpm, conc = state.values
        else:
            tpm, conc = limits.tokens_per_minute, limits.concurrent_requests
        if tpm is not None:
            tokens = state.tokens
            level = tokens.level + estimated - actual
            tokens.level = level if level < tpm else float(tpm)  # not ``min()``: a call
        if conc is not None and state.inflight > 0:
            state.inflight -= 1
