"""Monthly spend per tier (calendar month, UTC): reserve the worst case before a call, settle after.

Amounts are kept as integer nano-USD so Redis can add them atomically and the
in-process ledger adds exactly the same numbers. A reservation that would take
committed spend (settled + outstanding reservations) above the hard threshold
is refused before any upstream call; above the soft threshold it is allowed
with a warning.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import Protocol

from tiergate_contract import Budget
from tiergate_contract.ledger import month_of

__all__ = [
    "BudgetDecision",
    "BudgetLedger",
    "BudgetMonth",
    "LocalLedger",
    "month_of",
    "nano_cost",
    "to_nano",
]

_NANO = Decimal(1_000_000_000)


class BudgetMonth:
    """The current budget month; from the system clock it is recomputed only at month ends."""

    def __init__(self, wall_clock: Callable[[], datetime] | None = None) -> None:
        self._wall_clock = wall_clock
        self._month = ""
        self._until = 0.0  # epoch second the cached month is valid until

    def __call__(self) -> str:
        if self._wall_clock is not None:
            return month_of(self._wall_clock())
        now = time.time()
        if now >= self._until:
            current = datetime.fromtimestamp(now, UTC)
            self._month = month_of(current)
            following = datetime(
                current.year + current.month // 12, current.month % 12 + 1, 1, tzinfo=UTC
            )
            self._until = min(following.timestamp(), now + 60)
        return self._month


def nano_cost(input_nano: int, output_nano: int, prompt_tokens: int, completion_tokens: int) -> int:
    """Cost in nano-USD, rounded up, from ``to_nano`` prices per million tokens: integer math."""
    return -(-(input_nano * prompt_tokens + output_nano * completion_tokens) // 1_000_000)


def to_nano(usd: Decimal) -> int:
    """USD (or USD per million tokens) as integer nano-USD, rounded up: never under-reserve."""
    return int((usd * _NANO).to_integral_value(rounding=ROUND_CEILING))


@dataclass(slots=True)  # not frozen: one is made per call, and frozen __init__ costs 3x
class BudgetDecision:
    allowed: bool
    warn: bool
    committed_nano: int  # settled spend + outstanding reservations, this one included if allowed


class BudgetLedger(Protocol):
    async def reserve(self, tier: str, budget: Budget, month: str, nano: int) -> BudgetDecision: ...
    async def settle(self, tier: str, month: str, reserved_nano: int, actual_nano: int) -> None: ...
    async def spent(self, tier: str, month: str) -> int: ...


def thresholds(budget: Budget) -> tuple[int, int]:
    """(hard, soft) in nano-USD."""
    return to_nano(budget.hard_usd), to_nano(budget.soft_usd)


def _no_floor(tier: str, month: str) -> int:
    return 0


class LocalLedger:
    """This process's committed spend per tier and month. ``floor(tier, month)`` adds the
    spend of everyone else (the durable ledger, see ``durable``); 0 without one."""

    def __init__(self, floor: Callable[[str, str], int] = _no_floor) -> None:
        self.floor = floor
        self._committed: dict[tuple[str, str], int] = {}
        self._thresholds: dict[int, tuple[Budget, tuple[int, int]]] = {}

    async def reserve(self, tier: str, budget: Budget, month: str, nano: int) -> BudgetDecision:
        key = (tier, month)
        own = self._committed.get(key, 0)
        cached = self._thresholds.get(id(budget))
        if cached is None or cached[0] is not budget:
            cached = self._thresholds[id(budget)] = (budget, thresholds(budget))
        hard, soft = cached[1]
        committed = own + self.floor(tier, month)
        if committed + nano > hard:
            return BudgetDecision(False, True, committed)
        committed += nano
        self._committed[key] = own + nano
        return BudgetDecision(True, committed > soft, committed)

    async def settle(self, tier: str, month: str, reserved_nano: int, actual_nano: int) -> None:
        key = (tier, month)
        self._committed[key] = self._committed.get(key, 0) - reserved_nano + actual_nano

    async def spent(self, tier: str, month: str) -> int:
        return self._committed.get((tier, month), 0)
