"""Target choice: priorities in order; within one, a tier's strategy (weighted, cheapest first or
fastest first); per-target circuit breakers, latency, load and rate-limit exhaustion."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from itertools import groupby

from tiergate_contract import CircuitBreaker, RoutingStrategy, Target

__all__ = ["Breaker", "BreakerBoard", "BreakerState", "plan", "priority_groups"]


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


# Read once: on Python 3.11 each attribute read on an Enum class costs about 900 instructions
# (its metaclass's __getattr__ turns off the fast lookup), and every call reads them.
_CLOSED, _OPEN, _HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


# Peak-EWMA decay: a sample's weight halves about every 7 seconds (tau 10 s), as in
# Finagle's and Linkerd's load balancers.
_EWMA_TAU_SECONDS = 10.0
_WEIGHTED, _COST_FIRST = RoutingStrategy.WEIGHTED, RoutingStrategy.COST_FIRST
# Calls in flight that make a target look twice as slow as its latency. Finagle's
# latency x (in flight + 1) suits replicas that serve a call or a few at a time; a provider's
# API serves many at once, and at 40 calls/s (10 in flight) that penalty sent 20-45% of the
# calls to a target with 5x the p99 latency (bench/routing). Its own latency still steers
# away from a target that slows down under load, at once (peak-EWMA).
_IN_FLIGHT_DOUBLING = 64.0


@dataclass(slots=True)
class Breaker:
    """A target's health on one route: a circuit breaker that opens after
    ``consecutive_failures`` and, after ``cooldown_seconds``, lets one probe through; the
    peak-EWMA of its time to first token; its calls in flight; and until when it said its
    rate limit is exhausted (all on ``time.monotonic``)."""

    policy: CircuitBreaker
    state: BreakerState = _CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False
    latency: float = 0.0  # peak-EWMA seconds to first token; 0: no sample yet
    sampled_at: float = 0.0
    outstanding: int = 0
    exhausted_until: float = 0.0

    def observe_latency(self, seconds: float, now: float) -> None:
        """Peak-EWMA: a slower sample counts at once, faster ones pull it down over time."""
        if seconds >= self.latency:
            self.latency = seconds
        else:
            weight = math.exp(-(now - self.sampled_at) / _EWMA_TAU_SECONDS)
            self.latency = self.latency * weight + seconds * (1.0 - weight)
        self.sampled_at = now

    def load_score(self) -> float:
        """Lower is faster: latency, penalised by the calls already in flight (each adds
        1/``_IN_FLIGHT_DOUBLING`` of it)."""
        return self.latency * (1.0 + self.outstanding / _IN_FLIGHT_DOUBLING)

    def available(self, now: float) -> bool:
        """Could a request go to this target now? (No side effects.)"""
        if self.state is _CLOSED:
            return True
        if self.state is _OPEN:
            return now - self.opened_at >= self.policy.cooldown_seconds
        return not self.probing

    def acquire(self, now: float) -> bool:
        """Claim the right to send a request; in half-open only one probe at a time."""
        if self.state is _CLOSED:
            return True
        if not self.available(now):
            return False
        self.state = _HALF_OPEN
        self.probing = True
        return True

    def success(self) -> bool:
        """Close the breaker; ``True`` if it was not closed (the state changed)."""
        recovered = self.state is not _CLOSED
        self.state = _CLOSED
        self.failures = 0
        self.probing = False
        return recovered

    def failure(self, now: float) -> None:
        self.failures += 1
        self.probing = False
        if self.state is _HALF_OPEN or self.failures >= self.policy.consecutive_failures:
            self.state = _OPEN
            self.opened_at = now

    def abandon(self) -> None:
        """A claimed probe ended without a verdict (e.g. the client left)."""
        self.probing = False


class BreakerBoard:
    """Breakers per (route, target); state survives config reloads for unchanged names."""

    def __init__(self) -> None:
        self._breakers: dict[tuple[str, str], Breaker] = {}
        # Per route: target name -> breaker, built once per config (``retain`` clears it).
        self._by_route: dict[str, dict[str, Breaker]] = {}

    def get(self, route: str, target: str, policy: CircuitBreaker) -> Breaker:
        key = (route, target)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = Breaker(policy)
        elif breaker.policy is not policy and breaker.policy != policy:
            breaker.policy = policy
        return breaker

    def for_route(
        self, route: str, targets: Sequence[Target], policy: CircuitBreaker
    ) -> dict[str, Breaker]:
        """The breakers of a route's targets by name (cached until the next config swap)."""
        board = self._by_route.get(route)
        if board is None:
            board = self._by_route[route] = {
                t.name: self.get(route, t.name, policy) for t in targets
            }
        return board

    def items(self) -> list[tuple[tuple[str, str], Breaker]]:
        return list(self._breakers.items())

    def retain(self, keys: set[tuple[str, str]]) -> None:
        """After a config swap: forget breakers of targets that have gone."""
        self._by_route.clear()
        for key in list(self._breakers):
            if key not in keys:
                del self._breakers[key]


def priority_groups(targets: Sequence[Target]) -> tuple[tuple[Target, ...], ...]:
    """Targets by priority, lowest first; weight-0 targets (drained) are left out."""
    ranked = sorted((t for t in targets if t.weight > 0), key=lambda t: t.priority)
    return tuple(tuple(group) for _, group in groupby(ranked, key=lambda t: t.priority))


def _weighted_order(targets: list[Target], rng: random.Random) -> list[Target]:
    """A random order where each next pick is proportional to weight (sampling without replacement)."""
    if len(targets) == 2:  # the usual group: the same single draw as the loop below, unrolled
        first, second = targets
        if rng.random() * (first.weight + second.weight) < first.weight:
            return targets
        return [second, first]
    order: list[Target] = []
    total = 0
    for target in targets:
        total += target.weight
    while len(targets) > 1:
        pick = rng.random() * total
        index = 0
        while index < len(targets) - 1 and pick >= targets[index].weight:
            pick -= targets[index].weight
            index += 1
        chosen = targets.pop(index)
        total -= chosen.weight
        order.append(chosen)
    order.extend(targets)
    return order


def _cheapest_order(
    targets: list[Target], prices: Mapping[str, int], rng: random.Random
) -> list[Target]:
    """Cheapest first; targets of the same price in weighted order."""
    order: list[Target] = []
    ranked = sorted(targets, key=lambda t: prices[t.name])
    for _, tied in groupby(ranked, key=lambda t: prices[t.name]):
        same = list(tied)
        order.extend(_weighted_order(same, rng) if len(same) > 1 else same)
    return order


def _fastest_order(
    targets: list[Target], breakers: Mapping[str, Breaker], rng: random.Random
) -> list[Target]:
    """Lowest load-penalised latency first; targets never measured first of all (to learn
    them), ties in random order."""
    shuffled = list(targets)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda t: breakers[t.name].load_score())


def plan(
    groups: Sequence[Sequence[Target]],
    breakers: dict[str, Breaker],
    now: float,
    rng: random.Random,
    strategy: RoutingStrategy = _WEIGHTED,
    prices: Mapping[str, int] | None = None,
) -> list[Target]:
    """Targets in the order to try: priority groups in order (see ``priority_groups``), each
    ordered by ``strategy`` (``prices``: a comparable price per target, for CostFirst);
    targets whose breaker is open (and still cooling down) are left out, and those that said
    their rate limit is exhausted go last, after every other candidate.
    """
    order: list[Target] = []
    exhausted: list[Target] = []
    for group in groups:
        healthy = [t for t in group if breakers[t.name].available(now)]
        if len(healthy) > 1:
            if strategy is _WEIGHTED:
                healthy = _weighted_order(healthy, rng)
            elif strategy is _COST_FIRST:
                healthy = _cheapest_order(healthy, prices or {}, rng)
            else:
                healthy = _fastest_order(healthy, breakers, rng)
        for target in healthy:
            if breakers[target.name].exhausted_until > now:
                exhausted.append(target)
            else:
                order.append(target)
    return order + exhausted if exhausted else order
