"""Key expiry, revocation and rotation policy in the operator (pure: translate and decide).

The config carries each expiring key's moment (the gateways enforce it by their clocks);
disabled references and emptied Secrets leave their keys out at once; the tier reports
Secrets expiring soon or older than ``keyPolicy.maxAgeDays``, with a Warning event.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.operator.test_decide import settle
from tests.operator.test_reconcile_ownership import FakeKube
from tests.support.manifests import NOW, store_of, translate_namespace
from tiergate_contract import Tier, hash_client_key
from tiergate_operator.key_lifecycle import EXPIRING_SOON, ROTATION_DUE, next_key_moment, tier_spec
from tiergate_operator.reconcile import Reconciler, StatusChange, decide
from tiergate_operator.settings import OperatorSettings
from tiergate_operator.store import Store

Body = dict[str, Any]
NS = "demo"
CREATED = "2026-08-01T00:00:00Z"  # 119 days before NOW


def route() -> Body:
    target = {"name": "a", "baseURL": "http://127.0.0.1:9901/v1", "upstreamModel": "up"}
    return {
        "kind": "ModelRoute",
        "metadata": {"name": "chat"},
        "spec": {"model": "chat", "targets": [target]},
    }


def tier(*keys: Body, policy: Body | None = None) -> Body:
    spec: Body = {"isolation": "Shared", "keys": list(keys)}
    if policy is not None:
        spec["keyPolicy"] = policy
    return {"kind": "ApiKeyTier", "metadata": {"name": "web"}, "spec": spec}


def ref(name: str, **fields: Any) -> Body:
    return {"secretRef": {"name": name}, **fields}


def secret(name: str, created: str | None = CREATED, **values: str) -> Body:
    metadata: Body = {"name": name}
    if created:
        metadata["creationTimestamp"] = created
    return {"kind": "Secret", "metadata": metadata, "stringData": values}


def served_tier(*documents: Body) -> Tier:
    plan = translate_namespace(store_of([route(), *documents], NS), NS).plan("tiergate-shared")
    assert plan is not None
    (found,) = plan.config.tiers
    return found


def expiry_of(entry: Tier) -> dict[str, datetime]:
    return {e.sha256: e.expires_at for e in entry.key_expiry}


def test_an_expiring_reference_puts_its_moment_in_the_config() -> None:
    entry = served_tier(
        tier(ref("old", expiresAt="2026-12-31T01:00:00+01:00"), ref("new")),
        secret("old", k="tg-old"),
        secret("new", k="tg-new"),
    )
    assert set(entry.key_sha256) == {hash_client_key("tg-old"), hash_client_key("tg-new")}
    assert expiry_of(entry) == {hash_client_key("tg-old"): datetime(2026, 12, 31, tzinfo=UTC)}


def test_a_key_in_an_expiring_and_a_lasting_secret_never_expires() -> None:
    entry = served_tier(
        tier(ref("old", expiresAt="2026-12-31T00:00:00Z"), ref("copy")),
        secret("old", k="tg-same"),
        secret("copy", k="tg-same"),
    )
    assert entry.key_sha256 == (hash_client_key("tg-same"),)
    assert entry.key_expiry == ()


def test_a_disabled_reference_leaves_its_keys_out_and_others_serve() -> None:
    entry = served_tier(
        tier(ref("old", disabled=True), ref("new")),
        secret("old", k="tg-old"),
        secret("new", k="tg-new"),
    )
    assert entry.key_sha256 == (hash_client_key("tg-new"),)


def test_a_disabled_reference_to_a_deleted_secret_is_no_problem() -> None:
    translation = translate_namespace(
        store_of(
            [route(), tier(ref("gone", disabled=True), ref("new")), secret("new", k="tg-new")], NS
        ),
        NS,
    )
    assert "web" not in translation.tier_problems


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        (
            (tier(ref("old", disabled=True)), secret("old", k="tg-old")),
            "every key Secret of the tier is disabled",
        ),
        ((tier(ref("old")), secret("old")), "the enabled key Secrets hold no keys"),
    ],
    ids=["all disabled", "every value removed"],
)
def test_revoking_every_key_serves_the_tier_with_none_not_its_last_good_keys(
    documents: tuple[Body, ...], message: str
) -> None:
    before = translate_namespace(
        store_of([route(), tier(ref("old")), secret("old", k="tg-old")], NS), NS
    ).configs
    assert before["tiergate-shared"].tiers[0].key_sha256 == (hash_client_key("tg-old"),)
    after = translate_namespace(store_of([route(), *documents], NS), NS, previous=before)
    plan = after.plan("tiergate-shared")
    assert plan is not None and plan.config.tiers[0].key_sha256 == ()
    problem = after.tier_problems["web"]
    assert problem.reason == "NoKeys" and message in problem.message


def test_grace_days_refuse_an_old_secret_by_expiry_counted_from_its_creation() -> None:
    policy = {"maxAgeDays": 90, "graceDays": 30}
    entry = served_tier(tier(ref("old"), policy=policy), secret("old", k="tg-old"))
    refused = datetime(2026, 8, 1, tzinfo=UTC) + timedelta(days=120)
    assert expiry_of(entry) == {hash_client_key("tg-old"): refused}
    # An earlier expiresAt wins; a Secret of unknown age is never refused by age.
    earlier = served_tier(
        tier(ref("old", expiresAt="2026-09-01T00:00:00Z"), policy=policy), secret("old", k="tg-old")
    )
    assert expiry_of(earlier) == {hash_client_key("tg-old"): datetime(2026, 9, 1, tzinfo=UTC)}
    unknown = served_tier(tier(ref("old"), policy=policy), secret("old", created=None, k="tg-old"))
    assert unknown.key_expiry == ()


# --- statuses ---------------------------------------------------------------------------------


def tier_change(store: Store, now: datetime) -> StatusChange:
    state = store.namespace(NS)
    decision = decide(NS, state, OperatorSettings(), now)
    settle(store, list(decision.apply))
    decision = decide(NS, state, OperatorSettings(), now)
    change = next(c for c in decision.statuses if c.ref.name == "web")
    state.tiers["web"] = {**state.tiers["web"], "status": change.status}
    return change


def conditions(change: StatusChange) -> dict[str, tuple[str, str, str]]:
    return {
        c["type"]: (c["status"], c["reason"], c["message"]) for c in change.status["conditions"]
    }


def test_a_secret_expiring_within_the_window_is_reported_with_a_warning() -> None:
    store = store_of(
        [
            route(),
            tier(
                ref("old", expiresAt="2026-12-05T00:00:00Z"),
                ref("new"),
                policy={"expiryWarningDays": 10},
            ),
            secret("old", k="tg-old"),
            secret("new", k="tg-new"),
        ],
        NS,
    )
    change = tier_change(store, NOW)
    status, reason, message = conditions(change)[EXPIRING_SOON]
    assert (status, reason) == ("True", "ExpiringSoon")
    assert message.startswith("Secret old expires at 2026-12-05T00:00:00Z")
    assert change.key_warnings == ((reason, message),)
    assert conditions(change)["Ready"][0] == "True"  # a warning, not an outage
    # The same facts later: no status write, no second event; once expired, both again.
    assert not any(
        c.ref.name == "web"
        for c in decide(
            NS, store.namespace(NS), OperatorSettings(), NOW + timedelta(days=1)
        ).statuses
    )
    expired = tier_change(store, datetime(2026, 12, 5, tzinfo=UTC))
    status, reason, message = conditions(expired)[EXPIRING_SOON]
    assert (status, reason) == ("True", "KeysExpired")
    assert "Secret old expired at 2026-12-05T00:00:00Z" in message
    assert expired.key_warnings == ((reason, message),)


def test_a_secret_far_from_expiry_reads_false_and_a_tier_without_expiries_has_no_condition() -> (
    None
):
    store = store_of(
        [route(), tier(ref("old", expiresAt="2027-06-01T00:00:00Z")), secret("old", k="tg-old")], NS
    )
    change = tier_change(store, NOW)
    assert conditions(change)[EXPIRING_SOON][:2] == ("False", "NoneExpiringSoon")
    assert change.key_warnings == ()
    plain = tier_change(store_of([route(), tier(ref("old")), secret("old", k="tg-old")], NS), NOW)
    assert EXPIRING_SOON not in conditions(plain) and ROTATION_DUE not in conditions(plain)


def test_a_secret_older_than_max_age_is_reported_and_a_disabled_one_is_not() -> None:
    documents = [
        route(),
        secret("old", k="tg-old"),
        secret("new", created="2026-11-20T00:00:00Z", k="tg-new"),
    ]
    store = store_of([*documents, tier(ref("old"), ref("new"), policy={"maxAgeDays": 90})], NS)
    change = tier_change(store, NOW)
    status, reason, message = conditions(change)[ROTATION_DUE]
    assert (status, reason) == ("True", "MaxAgeExceeded")
    assert "Secret old created at 2026-08-01T00:00:00Z" in message and "Secret new" not in message
    assert change.key_warnings == ((reason, message),)
    retired = store_of(
        [*documents, tier(ref("old", disabled=True), ref("new"), policy={"maxAgeDays": 90})], NS
    )
    assert conditions(tier_change(retired, NOW))[ROTATION_DUE][:2] == ("False", "KeysWithinMaxAge")


def test_the_next_moment_is_the_earliest_window_expiry_or_max_age_to_come() -> None:
    body = tier(
        ref("old", expiresAt="2026-12-31T00:00:00Z"),
        ref("new"),
        policy={"maxAgeDays": 200, "expiryWarningDays": 7},
    )
    spec = tier_spec(body)
    assert spec is not None
    created = {"old": CREATED, "new": CREATED}
    assert next_key_moment([spec], created, NOW) == datetime(2026, 12, 24, tzinfo=UTC)
    assert next_key_moment([spec], created, datetime(2026, 12, 24, tzinfo=UTC)) == datetime(
        2026, 12, 31, tzinfo=UTC
    )
    assert next_key_moment([spec], created, datetime(2026, 12, 31, tzinfo=UTC)) == datetime(
        2027, 2, 17, 0, 0, 1, tzinfo=UTC
    )


async def test_the_reconciler_comes_back_by_itself_when_a_key_expires() -> None:
    moment = NOW + timedelta(milliseconds=300)
    expires = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    store = store_of(
        [
            route(),
            tier(ref("old", expiresAt=expires), ref("new")),
            secret("old", k="tg-old"),
            secret("new", k="tg-new"),
        ],
        NS,
    )
    kube = FakeKube(store=store)
    reconciler = Reconciler(store, kube, OperatorSettings(), clock=lambda: NOW)
    try:
        await reconciler.reconcile(NS)
        store.take_dirty()
        await asyncio.sleep(0.1)
        assert store.dirty == set()  # nothing is due yet
        await asyncio.sleep(0.4)
        assert store.dirty == {NS}  # the expiry: statuses to update, no watch event needed
    finally:
        await reconciler.close()
