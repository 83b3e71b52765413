"""Prepaid credits: a tier's lifetime spend against the sum of its grants; they never expire.

A call is admitted when the tier's lifetime committed spend (settled, plus reservations of
calls in flight) plus its own reservation stays within the credits granted; below
``warn_below_usd`` left it is admitted with a warning header. ``LocalCredits`` holds this
process's own share (without Redis); the rest of the tier's lifetime spend is a floor from
the durable ledger (``durable.DurableSpend``). Through Redis the same check is made by the
admission script (``leases``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tiergate_contract import Credits

from .budget import to_nano
from .errors import GatewayError

__all__ = [
    "CreditDecision",
    "LocalCredits",
    "credit_thresholds",
    "credits_exhausted",
    "credits_warning",
]


def credit_thresholds(credits: Credits) -> tuple[int, int]:
    """(granted, warn below) in nano-USD."""
    return to_nano(credits.granted_usd), to_nano(credits.warn_below_usd)


@dataclass(slots=True)
class CreditDecision:
    allowed: bool
    warn: bool  # what is left is below the warning threshold
    left_nano: int  # granted - committed, this call's reservation included if allowed


class LocalCredits:
    """This process's lifetime committed spend per tier, checked with ``floor(tier, month)`` (the
    rest of the tier's lifetime spend, durable, as of the budget month ``month``) against the
    tier's credits."""

    def __init__(self, floor: Callable[[str, str], int] = lambda tier, month: 0) -> None:
        self.floor = floor
        self._committed: dict[str, int] = {}
        self._thresholds: dict[int, tuple[Credits, tuple[int, int]]] = {}

    def thresholds(self, credits: Credits) -> tuple[int, int]:
        cached = self._thresholds.get(id(credits))
        if cached is None or cached[0] is not credits:
            cached = self._thresholds[id(credits)] = (credits, credit_thresholds(credits))
        return cached[1]

    def reserve(self, tier: str, credits: Credits, nano: int, month: str = "") -> CreditDecision:
        """``month``: the budget month the caller already has (the floor's month)."""
        granted, warn_below = self.thresholds(credits)
        own = self._committed.get(tier, 0)
        committed = own + self.floor(tier, month)
        if committed + nano > granted:
            return CreditDecision(False, True, granted - committed)
        self._committed[tier] = own + nano
        left = granted - committed - nano
        return CreditDecision(True, left < warn_below, left)

    def settle(self, tier: str, reserved_nano: int, actual_nano: int) -> None:
        self._committed[tier] = self._committed.get(tier, 0) - reserved_nano + actual_nano

    def committed(self, tier: str) -> int:
        return self._committed.get(tier, 0)


def credits_exhausted(tier: str, credits: Credits) -> GatewayError:
    # x-should-retry: false: the SDKs would retry in vain (credits come back by a top-up only).
    return GatewayError(
        429,
        f"the prepaid credits of tier {tier!r} are used up ({credits.granted_usd} USD granted);"
        " ask your platform team for a top-up",
        type_="insufficient_quota",
        code="credits_exhausted",
        headers=[("x-should-retry", "false")],
    )


def credits_warning(left_nano: int) -> tuple[str, str]:
    left = max(0, left_nano) / 1e9
    return ("x-tiergate-credits-warning", f"prepaid credits are running low: {left:.6f} USD left")
