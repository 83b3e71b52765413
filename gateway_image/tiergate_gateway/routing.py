"""Target choice: weighted order within a priority, priorities in order, per-target circuit breakers."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from itertools import groupby

from .contract import CircuitBreaker, Target

__all__ = ["Breaker", "BreakerBoard", "BreakerState", "plan"]


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(slots=True)
class Breaker:
    """Opens after ``consecutive_failures``; after ``cooldown_seconds`` lets one probe through."""

    policy: CircuitBreaker
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False

    def available(self, now: float) -> bool:
        """Could a request go to this target now? (No side effects.)"""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            return now - self.opened_at >= self.policy.cooldown_seconds
        return not self.probing

    def acquire(self, now: float) -> bool:
        """Claim the right to send a request; in half-open only one probe at a time."""
        if self.state is BreakerState.CLOSED:
            return True
        if not self.available(now):
            return False
        self.state = BreakerState.HALF_OPEN
        self.probing = True
        return True

    def success(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.probing = False

    def failure(self, now: float) -> None:
        self.failures += 1
        self.probing = False
        if (
            self.state is BreakerState.HALF_OPEN
            or self.failures >= self.policy.consecutive_failures
        ):
            self.state = BreakerState.OPEN
            self.opened_at = now

    def abandon(self) -> None:
        """A claimed probe ended without a verdict (e.g. the client left)."""
        self.probing = False


class BreakerBoard:
    """Breakers per (route, target); state survives config reloads for unchanged names."""

    def __init__(self) -> None:
        self._breakers: dict[tuple[str, str], Breaker] = {}

    def get(self, route: str, target: str, policy: CircuitBreaker) -> Breaker:
        key = (route, target)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = Breaker(policy)
        elif breaker.policy is not policy and breaker.policy != policy:
            breaker.policy = policy
        return breaker

    def items(self) -> list[tuple[tuple[str, str], Breaker]]:
        return list(self._breakers.items())

    def retain(self, keys: set[tuple[str, str]]) -> None:
        for key in list(self._breakers):
            if key not in keys:
                del self._breakers[key]


def _weighted_order(targets: Sequence[Target], rng: random.Random) -> list[Target]:
    """A random order where each next pick is proportional to weight (Efraimidis-Spirakis)."""
    if len(targets) == 1:
        return list(targets)
    keyed = [(rng.random() ** (1.0 / t.weight), t) for t in targets]
    keyed.sort(key=lambda pair: pair[0], reverse=True)
    return [t for _, t in keyed]


def plan(
    candidates: Sequence[Target],
    breakers: dict[str, Breaker],
    now: float,
    rng: random.Random,
) -> list[Target]:
    """Targets in the order to try: lowest priority first, weighted within a priority.

    Weight-0 targets are drained and never chosen; targets whose breaker is open
    (and still cooling down) are left out.
    """
    order: list[Target] = []
    ranked = sorted((t for t in candidates if t.weight > 0), key=lambda t: t.priority)
    for _, group in groupby(ranked, key=lambda t: t.priority):
        healthy = [t for t in group if breakers[t.name].available(now)]
        order.extend(_weighted_order(healthy, rng))
    return order
