"""The spend ledger: what gateways report and what the operator folds (pure; no I/O).

Money is recorded by the gateways and kept by the Kubernetes API (see ``docs/ledger.md``):

- Every gateway process writes one ``SpendReport`` object (``SpendReportSpec``): what it has
  settled since it started, per tier, per month and per client key name, as monotonic
  integer counters in nano-USD. It writes it every few seconds while it has news and once
  more, ``final``, when it exits. The object carries the finalizer ``LEDGER_FINALIZER``, so
  it cannot vanish before its money is folded.
- The operator folds the report of a process that ended (``final``, or silent for longer
  than the stale threshold, which must exceed ``quiet_report_max_age``) into the tier's
  ``status.ledger`` (``TierLedger``) and records its name in ``folded``; then it removes the
  finalizer and the report is gone.
- Anyone (the operator for ``status.spend``, a gateway for its baseline) gets a tier's
  totals with ``tier_totals``: the folded ledger plus every report not yet folded. A report
  is counted exactly once: live until its name is in ``folded``, from then on in the ledger.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "DEFAULT_SPEND_HEARTBEAT_SECONDS",
    "DEFAULT_SPEND_REPORT_SECONDS",
    "KEY_NAME_OTHER",
    "LEDGER_FINALIZER",
    "MAX_KEYS_PER_MONTH",
    "MAX_LEDGER_MONTHS",
    "MAX_REPORT_MONTHS",
    "KeySpend",
    "KeyTotal",
    "MonthSpend",
    "SpendReportSpec",
    "TierLedger",
    "TierReport",
    "TierTotals",
    "clock_ahead_for_tests",
    "fold",
    "month_of",
    "quiet_report_max_age",
    "tier_totals",
]

# On every SpendReport: only the operator removes it, after folding the report's money.
LEDGER_FINALIZER = "tiergate.dev/ledger"
# Client keys tracked one by one per tier and month in a report or the ledger; the spend
# of any further key is summed under KEY_NAME_OTHER, so objects stay bounded.
MAX_KEYS_PER_MONTH = 200
KEY_NAME_OTHER = "(other keys)"
# Months one report may hold (a process alive that long starts a new report).
MAX_REPORT_MONTHS = 12
# Months the ledger keeps one by one (the current one and the two before); lifetime
# totals keep everything.
MAX_LEDGER_MONTHS = 3
# Report names the ledger remembers as folded, newest last.
MAX_FOLDED = 256
# A gateway process writes its report every this many seconds while it has news
# (--spend-report-seconds) and at least every this many with none, its heartbeat
# (--spend-heartbeat-seconds): its defaults, which the operator needs to tell a quiet
# process from one that ended (``quiet_report_max_age``) when the tuning leaves them unset.
DEFAULT_SPEND_REPORT_SECONDS = 5.0
DEFAULT_SPEND_HEARTBEAT_SECONDS = 60.0

_MONTH = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")


class _Model(BaseModel):
    """camelCase on the wire (these are Kubernetes objects), snake_case in Python."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
    )


class KeySpend(_Model):
    """One client key's spend in one month: ``key`` is ``<secret>/<data key>``, never a value."""

    key: str = Field(min_length=1, max_length=507)
    spent_nano: int = Field(ge=0)
    calls: int = Field(ge=0)
    last_used_at: AwareDatetime | None = None


class MonthSpend(_Model):
    month: str = Field(pattern=_MONTH.pattern)
    spent_nano: int = Field(ge=0)
    calls: int = Field(ge=0)
    keys: tuple[KeySpend, ...] = Field(default=(), max_length=MAX_KEYS_PER_MONTH + 1)


class TierReport(_Model):
    tier: str = Field(min_length=1, max_length=253)
    months: tuple[MonthSpend, ...] = Field(max_length=MAX_REPORT_MONTHS)
    # Held by calls in flight right now (not spent): lets replicas without Redis see each
    # other's outstanding reservations.
    reserved_nano: int = Field(default=0, ge=0)


class SpendReportSpec(_Model):
    """What one gateway process settled since it started (monotonic counters)."""

    gateway: str = Field(min_length=1, max_length=253)
    pod: str = Field(min_length=1, max_length=253)
    started_at: AwareDatetime
    reported_at: AwareDatetime
    final: bool = False  # written by a process on its way out: fold it at once
    tiers: tuple[TierReport, ...] = ()

    def tier(self, name: str) -> TierReport | None:
        return next((t for t in self.tiers if t.tier == name), None)


class TierLedger(_Model):
    """``ApiKeyTier.status.ledger``: the money of processes that ended, folded."""

    lifetime_nano: int = Field(default=0, ge=0)
    lifetime_calls: int = Field(default=0, ge=0)
    months: tuple[MonthSpend, ...] = Field(default=(), max_length=MAX_LEDGER_MONTHS)
    # When each key was last used, over all time (months forget their keys).
    last_used: tuple[KeySpend, ...] = Field(default=(), max_length=4 * MAX_KEYS_PER_MONTH)
    # Reports whose money is in this ledger (oldest first); their objects may still exist
    # for a moment (the finalizer not yet removed) and must not be counted again.
    folded: tuple[str, ...] = Field(default=(), max_length=MAX_FOLDED)


@dataclass(frozen=True, slots=True)
class KeyTotal:
    key: str
    month_nano: int
    month_calls: int
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class TierTotals:
    month: str
    month_nano: int = 0
    month_calls: int = 0
    lifetime_nano: int = 0
    lifetime_calls: int = 0
    reserved_nano: int = 0  # held by calls in flight, as last reported
    keys: tuple[KeyTotal, ...] = field(default=())  # highest month spend first


def tier_totals(
    tier: str,
    month: str,
    ledger: TierLedger,
    reports: Iterable[tuple[str, SpendReportSpec]],
    *,
    exclude: str | None = None,
) -> TierTotals:
    """A tier's spend: ``ledger`` plus each report (by object name) it has not folded.

    ``exclude`` leaves one report out (a gateway counts its own spend exactly, not as last
    reported).
    """
    folded = set(ledger.folded)
    month_nano = month_calls = reserved = 0
    lifetime_nano, lifetime_calls = ledger.lifetime_nano, ledger.lifetime_calls
    keys: dict[str, list[int]] = {}
    last_used = _last_used(ledger)

    def add_month(entry: MonthSpend) -> None:
        nonlocal month_nano, month_calls
        month_nano += entry.spent_nano
        month_calls += entry.calls
        _add_keys(keys, entry.keys)

    for entry in ledger.months:
        if entry.month == month:
            add_month(entry)
    for name, report in reports:
        if name in folded or name == exclude:
            continue
        tier_report = report.tier(tier)
        if tier_report is None:
            continue
        reserved += tier_report.reserved_nano
        for entry in tier_report.months:
            lifetime_nano += entry.spent_nano
            lifetime_calls += entry.calls
            if entry.month == month:
                add_month(entry)
            for key in entry.keys:
                _latest(last_used, key)
    ranked = sorted(keys.items(), key=lambda item: (-item[1][0], item[0]))
    return TierTotals(
        month=month,
        month_nano=month_nano,
        month_calls=month_calls,
        lifetime_nano=lifetime_nano,
        lifetime_calls=lifetime_calls,
        reserved_nano=reserved,
        keys=tuple(
            KeyTotal(name, spent, calls, last_used.get(name)) for name, (spent, calls) in ranked
        ),
    )


def fold(ledger: TierLedger, tier: str, name: str, report: SpendReportSpec) -> TierLedger:
    """``ledger`` with report ``name``'s money for ``tier`` added, once: folding a report
    already in ``folded`` returns ``ledger`` unchanged."""
    if name in ledger.folded:
        return ledger
    tier_report = report.tier(tier)
    entries = tier_report.months if tier_report is not None else ()
    months = {entry.month: entry for entry in ledger.months}
    last_used = _last_used(ledger)
    lifetime_nano, lifetime_calls = ledger.lifetime_nano, ledger.lifetime_calls
    for entry in entries:
        lifetime_nano += entry.spent_nano
        lifetime_calls += entry.calls
        months[entry.month] = _merge(months.get(entry.month), entry)
        for key in entry.keys:
            _latest(last_used, key)
    kept = sorted(months)[-MAX_LEDGER_MONTHS:]
    recent = sorted(last_used.items(), key=lambda item: item[1])[-4 * MAX_KEYS_PER_MONTH :]
    return TierLedger(
        lifetime_nano=lifetime_nano,
        lifetime_calls=lifetime_calls,
        months=tuple(months[month] for month in kept),
        last_used=tuple(
            KeySpend(key=key, spent_nano=0, calls=0, last_used_at=moment)
            for key, moment in sorted(recent)
        ),
        folded=(*ledger.folded, name)[-MAX_FOLDED:],
    )


def _merge(into: MonthSpend | None, entry: MonthSpend) -> MonthSpend:
    if into is None:
        return entry
    keys: dict[str, list[int]] = {}
    _add_keys(keys, (*into.keys, *entry.keys))
    return MonthSpend(
        month=into.month,
        spent_nano=into.spent_nano + entry.spent_nano,
        calls=into.calls + entry.calls,
        keys=_bounded_keys(keys),
    )


def _bounded_keys(keys: dict[str, list[int]]) -> tuple[KeySpend, ...]:
    """The ``MAX_KEYS_PER_MONTH`` keys that spent most, the rest summed under one name."""
    ranked = sorted(
        keys.items(), key=lambda item: (item[0] == KEY_NAME_OTHER, -item[1][0], item[0])
    )
    kept, rest = ranked[:MAX_KEYS_PER_MONTH], ranked[MAX_KEYS_PER_MONTH:]
    if rest:
        kept = [item for item in kept if item[0] != KEY_NAME_OTHER]
        extra = [item for item in ranked if item not in kept]
        kept.append((KEY_NAME_OTHER, [sum(t[0] for _, t in extra), sum(t[1] for _, t in extra)]))
    return tuple(
        KeySpend(key=key, spent_nano=spent, calls=calls) for key, (spent, calls) in sorted(kept)
    )


def _add_keys(totals: dict[str, list[int]], keys: Iterable[KeySpend]) -> None:
    """Add each key's spend and calls to ``totals`` (key -> [spent nano-USD, calls])."""
    for key in keys:
        total = totals.setdefault(key.key, [0, 0])
        total[0] += key.spent_nano
        total[1] += key.calls


def _last_used(ledger: TierLedger) -> dict[str, datetime]:
    """When each key was last used, as the ledger remembers it."""
    return {k.key: k.last_used_at for k in ledger.last_used if k.last_used_at}


def _latest(last_used: dict[str, datetime], key: KeySpend) -> None:
    if key.last_used_at is None:
        return
    seen = last_used.get(key.key)
    if seen is None or key.last_used_at > seen:
        last_used[key.key] = key.last_used_at


def month_of(moment: datetime) -> str:
    """The UTC calendar month of an aware datetime, e.g. ``2025-03``: a ledger's month key."""
    if moment.tzinfo is None:
        raise ValueError("a ledger month needs an aware datetime")
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment.month:02d}"


def quiet_report_max_age(report_seconds: Decimal, heartbeat_seconds: Decimal) -> Decimal:
    """The stale threshold must be greater than this: ``2 x heartbeat + report interval``.

    A live process with no news checks every ``report_seconds`` whether its heartbeat is due,
    so its writes are up to ``heartbeat + report`` apart; one more heartbeat covers a write
    that is slow or fails and is retried (an API server hiccup, 409s) and the clock skew
    between the gateway, which stamps ``reportedAt``, and the operator, which judges its age.
    A threshold at or below it would fold the reports of live, quiet processes. Decimal, so
    the operator and the chart (whose float functions compute in decimal) agree at the edge.
    """
    return 2 * heartbeat_seconds + report_seconds


def clock_ahead_for_tests(env: Mapping[str, str], variable: str) -> Callable[[], datetime] | None:
    """For tests only: with ``variable`` set in ``env``, a clock that many seconds ahead of
    the system's, so that a month's turn can be tested without waiting for one (None when
    it is not set). Each side reads its own variable; none is a chart value or a flag."""
    text = env.get(variable, "").strip()
    if not text:
        return None
    try:
        offset = timedelta(seconds=float(text))
    except (ValueError, OverflowError):
        raise ValueError(f"{variable}={text!r} is not a number of seconds") from None
    return lambda: datetime.now(UTC) + offset
