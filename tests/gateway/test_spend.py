"""The spend recorder and the reports built from it (pure): exact counters, bounded keys,
reports that hold only what was settled since the base, reservations as they stand."""

from __future__ import annotations

from datetime import UTC, datetime

from tiergate_contract.ledger import (
    KEY_NAME_OTHER,
    MAX_KEYS_PER_MONTH,
    SpendReportSpec,
    TierLedger,
    tier_totals,
)
from tiergate_gateway.spend import (
    SpendRecorder,
    add_snapshots,
    month_totals,
    report_tiers,
    snapshot_of,
)

T0 = 1_796_000_000.0


def spec_of(recorder: SpendRecorder, base: dict, final: bool = False) -> SpendReportSpec:  # type: ignore[type-arg]
    moment = datetime.fromtimestamp(T0, UTC)
    return SpendReportSpec(
        gateway="g",
        pod="p",
        started_at=moment,
        reported_at=moment,
        final=final,
        tiers=report_tiers(recorder.snapshot(), base, recorder.reserved),
    )


def test_settled_calls_are_counted_per_tier_month_and_key() -> None:
    now = [T0]
    recorder = SpendRecorder(clock=lambda: now[0])
    recorder.reserve("t", 500)
    recorder.reserve("t", 300)
    assert recorder.reserved == {"t": 800}
    recorder.settle("t", "2026-12", "keys/alice", 500, 120, served=True)
    now[0] += 10
    recorder.settle("t", "2026-12", "keys/bob", 300, 0, served=False)  # nothing served: no call
    recorder.reserve("u", 50)
    recorder.settle("u", "2026-11", "keys/carol", 50, 7, served=True)
    spec = spec_of(recorder, {})
    t = spec.tier("t")
    assert t is not None and t.reserved_nano == 0
    [month] = t.months
    assert (month.month, month.spent_nano, month.calls) == ("2026-12", 120, 1)
    [alice] = month.keys
    assert (alice.key, alice.spent_nano, alice.calls) == ("keys/alice", 120, 1)
    assert alice.last_used_at == datetime.fromtimestamp(T0, UTC)
    totals = tier_totals("u", "2026-11", TierLedger(), [("r", spec)])
    assert (totals.month_nano, totals.month_calls, totals.lifetime_nano) == (7, 1, 7)


def test_keys_beyond_the_bound_are_summed_under_other_keys() -> None:
    recorder = SpendRecorder(clock=lambda: T0)
    for i in range(MAX_KEYS_PER_MONTH + 50):
        recorder.settle("t", "2026-12", f"keys/k{i:04d}", 0, 10, served=True)
    recorder.settle("t", "2026-12", "keys/k0000", 0, 5, served=True)  # a known key stays itself
    [month] = spec_of(recorder, {}).tiers[0].months
    assert len(month.keys) == MAX_KEYS_PER_MONTH + 1
    by_name = {k.key: k for k in month.keys}
    assert by_name[KEY_NAME_OTHER].spent_nano == 500 and by_name[KEY_NAME_OTHER].calls == 50
    assert by_name["keys/k0000"].spent_nano == 15
    assert month.spent_nano == sum(k.spent_nano for k in month.keys) == 10 * 250 + 5


def test_a_report_holds_what_was_settled_since_its_base_and_every_nano_once() -> None:
    recorder = SpendRecorder(clock=lambda: T0)
    recorder.settle("t", "2026-12", "keys/a", 0, 100, served=True)
    recorder.settle("t", "2026-12", "keys/b", 0, 40, served=True)
    first = spec_of(recorder, {})  # written, then frozen (terminating)
    base = add_snapshots({}, snapshot_of(first))
    recorder.settle("t", "2026-12", "keys/a", 0, 1, served=True)
    recorder.settle("t", "2027-01", "keys/a", 0, 9, served=True)
    second = spec_of(recorder, base)
    [dec, jan] = second.tiers[0].months
    assert (dec.spent_nano, dec.calls, [k.key for k in dec.keys]) == (1, 1, ["keys/a"])
    assert (jan.spent_nano, jan.calls) == (9, 1)
    # Both reports together hold exactly what the recorder counted.
    totals = tier_totals("t", "2026-12", TierLedger(), [("r1", first), ("r2", second)])
    assert totals.month_nano == 141 and totals.lifetime_nano == 150
    assert month_totals(base, "t", "2026-12") == (140, 140)
    assert month_totals(recorder.snapshot(), "t", "2027-01") == (9, 150)


def test_a_tier_with_only_reservations_is_reported_and_nothing_else_is() -> None:
    recorder = SpendRecorder(clock=lambda: T0)
    recorder.reserve("t", 70)
    recorder.reserve("idle", 5)
    recorder.settle("idle", "2026-12", "keys/x", 5, 0, served=False)
    spec = spec_of(recorder, {})
    assert [(t.tier, t.reserved_nano, t.months) for t in spec.tiers] == [("t", 70, ())]
    assert recorder.version == 3  # every change moves it: news to report
