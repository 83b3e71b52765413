"""A tier's ``status.spend`` and the Warning events its changes call for (pure).

The figures come from ``tier_totals`` (the folded ledger plus every report not yet folded),
the one definition of a tier's spend the gateways use too. Money is shown as USD decimal
strings; the events fire once per crossing of a threshold (the previous ``status.spend``
is the memory, so an operator restart posts nothing twice).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from tiergate_contract.ledger import SpendReportSpec, TierLedger, month_of, tier_totals
from tiergate_operator.models import ApiKeyTierSpec

__all__ = [
    "MAX_STATUS_KEYS",
    "LedgerUnreadable",
    "SpendWarning",
    "format_time",
    "month_of",
    "spend_changed",
    "spend_status",
    "spend_warnings",
    "tier_ledger",
    "usd",
]

# Client keys listed one by one in status.spend; the rest are summed in otherKeys.
MAX_STATUS_KEYS = 20
_NANO = Decimal(1_000_000_000)

Body = Mapping[str, Any]


class LedgerUnreadable(ValueError):
    """A tier's status.ledger does not parse (edited by hand?): nothing is folded into it."""


@dataclass(frozen=True)
class SpendWarning:
    reason: str
    message: str


def usd(nano: int) -> str:
    """Nano-USD as a plain decimal string: 13200000 -> "0.0132", 0 -> "0"."""
    text = format((Decimal(nano) / _NANO).normalize(), "f")
    return "0" if text in ("-0", "0") else text


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tier_ledger(body: Body) -> TierLedger:
    raw = (body.get("status") or {}).get("ledger")
    if not raw:
        return TierLedger()
    try:
        return TierLedger.model_validate(raw)
    except ValidationError as error:
        raise LedgerUnreadable(
            f"status.ledger of ApiKeyTier {body['metadata']['name']} does not parse: "
            f"{error.errors()[0]['msg']}"
        ) from None


def _granted_nano(spec: ApiKeyTierSpec) -> int | None:
    if spec.credits is None:
        return None
    return sum(int(Decimal(g.amount_usd) * _NANO) for g in spec.credits.grants or ())


def spend_status(
    name: str,
    spec: ApiKeyTierSpec,
    ledger: TierLedger,
    reports: Iterable[tuple[str, SpendReportSpec]],
    now: datetime,
) -> dict[str, Any]:
    """``status.spend`` without ``updatedAt``; fields that do not apply are None (a merge
    patch removes them)."""
    totals = tier_totals(name, month_of(now), ledger, reports)
    granted = _granted_nano(spec)
    shown, rest = totals.keys[:MAX_STATUS_KEYS], totals.keys[MAX_STATUS_KEYS:]
    return {
        "month": totals.month,
        "monthUSD": usd(totals.month_nano),
        "monthCalls": totals.month_calls,
        "lifetimeUSD": usd(totals.lifetime_nano),
        "budgetUSD": spec.budget.monthly_usd if spec.budget else None,
        "creditsGrantedUSD": usd(granted) if granted is not None else None,
        "creditsUsedUSD": usd(totals.lifetime_nano) if granted is not None else None,
        "creditsRemainingUSD": usd(granted - totals.lifetime_nano) if granted is not None else None,
        "keys": [
            {
                "key": key.key,
                "monthUSD": usd(key.month_nano),
                "calls": key.month_calls,
                **({"lastUsedAt": format_time(key.last_used_at)} if key.last_used_at else {}),
            }
            for key in shown
        ],
        "otherKeys": _other_keys(rest),
    }


def _other_keys(rest: tuple[Any, ...]) -> dict[str, Any] | None:
    if not rest:
        return None
    return {
        "count": len(rest),
        "monthUSD": usd(sum(key.month_nano for key in rest)),
        "calls": sum(key.month_calls for key in rest),
    }


def spend_changed(current: Body | None, desired: Mapping[str, Any]) -> bool:
    """Does ``status.spend`` need a write (``updatedAt`` aside)?"""
    current = {k: v for k, v in (current or {}).items() if k != "updatedAt" and v is not None}
    wanted = {k: v for k, v in desired.items() if v is not None}
    return current != wanted


def _amount(spend: Body | None, field: str) -> Decimal | None:
    value = (spend or {}).get(field)
    return Decimal(value) if isinstance(value, str) else None


def spend_warnings(
    name: str, spec: ApiKeyTierSpec, previous: Body | None, current: Mapping[str, Any]
) -> list[SpendWarning]:
    """The thresholds ``current`` crossed since ``previous`` (the last ``status.spend``):
    the budget's soft threshold and its hard one (exhaustion) this month, credits below
    ``warnBelowUSD`` and credits used up."""
    warnings: list[SpendWarning] = []
    month_now = Decimal(current["monthUSD"])
    same_month = previous is not None and previous.get("month") == current["month"]
    month_before = _amount(previous, "monthUSD") if same_month else Decimal(0)
    month_before = month_before or Decimal(0)
    if spec.budget is not None:
        budget = Decimal(spec.budget.monthly_usd)
        for percent, reason, what in (
            (spec.budget.hard_threshold_percent, "BudgetExhausted", "exhausted"),
            (spec.budget.soft_threshold_percent, "BudgetSoftThreshold", "at its soft threshold"),
        ):
            limit = budget * percent / 100
            if month_before < limit <= month_now:
                warnings.append(
                    SpendWarning(
                        reason,
                        f"ApiKeyTier {name}: the monthly budget is {what}: "
                        f"${month_now} spent in {current['month']} of ${budget} "
                        f"({percent}% is ${limit.normalize():f})",
                    )
                )
                break  # one event per change: exhaustion says more than the soft threshold
    remaining_now = _amount(current, "creditsRemainingUSD")
    if remaining_now is not None and spec.credits is not None:
        remaining_before = _amount(previous, "creditsRemainingUSD")
        if remaining_before is None:
            remaining_before = Decimal(current["creditsGrantedUSD"])
        warn_below = Decimal(spec.credits.warn_below_usd or 0)
        if remaining_before > 0 >= remaining_now:
            warnings.append(
                SpendWarning(
                    "CreditsExhausted",
                    f"ApiKeyTier {name}: the prepaid credits are used up "
                    f"(${current['creditsUsedUSD']} spent of ${current['creditsGrantedUSD']} "
                    "granted): calls are refused until a new grant is added",
                )
            )
        elif remaining_before >= warn_below > remaining_now:
            warnings.append(
                SpendWarning(
                    "CreditsLow",
                    f"ApiKeyTier {name}: ${remaining_now} of prepaid credits left, below "
                    f"the warning threshold of ${warn_below}",
                )
            )
    return warnings
