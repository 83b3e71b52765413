"""This process's spend, as the ledger wants it reported (pure; see ``docs/ledger.md``).

``SpendRecorder`` counts what every settled call cost, per tier, per month and per client key
name (monotonic for the life of the process), and what calls in flight hold reserved per
tier. Per month at most ``MAX_KEYS_PER_MONTH`` keys are counted one by one; any further key's
spend is added under ``KEY_NAME_OTHER``, so a report stays bounded.

``Snapshot`` freezes the counters; ``report_tiers(now, base)`` is what a report holds: the
counters minus ``base``, the snapshot the process's earlier reports hold (empty for its
first report). A report that had to be replaced starts from where the old one froze.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tiergate_contract.ledger import (
    KEY_NAME_OTHER,
    MAX_KEYS_PER_MONTH,
    KeySpend,
    MonthSpend,
    SpendReportSpec,
    TierReport,
)

__all__ = ["Snapshot", "SpendRecorder", "month_totals", "report_tiers", "snapshot_of"]

# tier -> month -> (spent nano-USD, calls, key -> (spent, calls, last used, POSIX seconds))
KeyCounts = dict[str, tuple[int, int, float]]
MonthCounts = tuple[int, int, KeyCounts]
Snapshot = dict[str, dict[str, MonthCounts]]


@dataclass(slots=True)
class _Month:
    spent: int = 0
    calls: int = 0
    keys: dict[str, list[float]] = field(default_factory=dict)  # key -> [spent, calls, last use]


class SpendRecorder:
    """Settled spend and reservations of this process; ``version`` moves with every change."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tiers: dict[str, dict[str, _Month]] = {}
        self.reserved: dict[str, int] = {}  # tier -> nano-USD held by calls in flight
        self.version = 0

    def reserve(self, tier: str, nano: int) -> None:
        self.reserved[tier] = self.reserved.get(tier, 0) + nano
        self.version += 1

    def settle(
        self, tier: str, month: str, key: str, reserved: int, cost: int, served: bool
    ) -> None:
        """A call ended: its reservation is given back, its cost (if it was served) counted."""
        if reserved:
            self.reserved[tier] = self.reserved.get(tier, 0) - reserved
        self.version += 1
        if not served:
            return
        months = self._tiers.get(tier)
        if months is None:
            months = self._tiers[tier] = {}
        entry = months.get(month)
        if entry is None:
            entry = months[month] = _Month()
        entry.spent += cost
        entry.calls += 1
        counts = entry.keys.get(key)
        if counts is None:
            if len(entry.keys) >= MAX_KEYS_PER_MONTH and key != KEY_NAME_OTHER:
                key = KEY_NAME_OTHER
                counts = entry.keys.get(key)
            if counts is None:
                counts = entry.keys[key] = [0, 0, 0.0]
        counts[0] += cost
        counts[1] += 1
        counts[2] = self._clock()

    def snapshot(self) -> Snapshot:
        return {
            tier: {
                month: (
                    entry.spent,
                    entry.calls,
                    {key: (int(c[0]), int(c[1]), c[2]) for key, c in entry.keys.items()},
                )
                for month, entry in months.items()
            }
            for tier, months in self._tiers.items()
        }


def snapshot_of(spec: SpendReportSpec) -> Snapshot:
    """What a written report holds, as a snapshot (to add to a base)."""
    return {
        entry.tier: {
            month.month: (
                month.spent_nano,
                month.calls,
                {
                    key.key: (
                        key.spent_nano,
                        key.calls,
                        key.last_used_at.timestamp() if key.last_used_at else 0.0,
                    )
                    for key in month.keys
                },
            )
            for month in entry.months
        }
        for entry in spec.tiers
    }


def add_snapshots(one: Snapshot, other: Snapshot) -> Snapshot:
    """The sum of two snapshots (a base grown by a report that froze)."""
    total: Snapshot = {tier: dict(months) for tier, months in one.items()}
    for tier, months in other.items():
        into = total.setdefault(tier, {})
        for month, (spent, calls, keys) in months.items():
            have = into.get(month, (0, 0, {}))
            merged = dict(have[2])
            for key, (k_spent, k_calls, used) in keys.items():
                seen = merged.get(key, (0, 0, 0.0))
                merged[key] = (seen[0] + k_spent, seen[1] + k_calls, max(seen[2], used))
            into[month] = (have[0] + spent, have[1] + calls, merged)
    return total


def month_totals(snapshot: Snapshot, tier: str, month: str) -> tuple[int, int]:
    """(the month's spend, the lifetime spend) of ``tier`` in ``snapshot``, nano-USD."""
    months = snapshot.get(tier, {})
    return months.get(month, (0, 0, {}))[0], sum(entry[0] for entry in months.values())


def report_tiers(now: Snapshot, base: Snapshot, reserved: dict[str, int]) -> tuple[TierReport, ...]:
    """``now`` minus ``base``, with the reservations held: the tiers of a report."""
    tiers: list[TierReport] = []
    for tier in sorted(set(now) | {t for t, nano in reserved.items() if nano > 0}):
        base_months = base.get(tier, {})
        months: list[MonthSpend] = []
        for month, (spent, calls, keys) in sorted(now.get(tier, {}).items()):
            base_spent, base_calls, base_keys = base_months.get(month, (0, 0, {}))
            if calls == base_calls and spent == base_spent:
                continue
            key_spend: list[KeySpend] = []
            for key, (k_spent, k_calls, used) in sorted(keys.items()):
                b_spent, b_calls, _ = base_keys.get(key, (0, 0, 0.0))
                if k_calls == b_calls and k_spent == b_spent:
                    continue
                key_spend.append(
                    KeySpend(
                        key=key,
                        spent_nano=k_spent - b_spent,
                        calls=k_calls - b_calls,
                        last_used_at=datetime.fromtimestamp(used, UTC) if used else None,
                    )
                )
            months.append(
                MonthSpend(
                    month=month,
                    spent_nano=spent - base_spent,
                    calls=calls - base_calls,
                    keys=tuple(key_spend),
                )
            )
        held = max(0, reserved.get(tier, 0))
        if months or held:
            tiers.append(TierReport(tier=tier, months=tuple(months), reserved_nano=held))
    return tuple(tiers)
