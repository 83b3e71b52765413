"""Ownership and local failures in decide (pure), next_retries, report, and act (a fake API)."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from tests.operator.test_decide import NS, example_store, settle
from tests.support.manifests import NOW
from tiergate_operator.kube import Invalid, KubeApi, KubeError, NotFound, Unreachable
from tiergate_operator.ownership import (
    describe_holder,
    fields_handed_to_apply,
    is_ours,
    may_delete,
)
from tiergate_operator.plans import Failure
from tiergate_operator.reconcile import (
    NAMESPACE_ACCESS,
    Apply,
    Create,
    Decision,
    Reconciler,
    StatusChange,
    act,
    decide,
    next_retries,
    report,
)
from tiergate_operator.refs import ObjectRef
from tiergate_operator.registry import MANAGED_BY, OPERATOR
from tiergate_operator.settings import OperatorSettings
from tiergate_operator.store import Store

Body = dict[str, Any]
ACME, SHARED = "tiergate-enterprise-acme", "tiergate-shared"
SETTINGS = OperatorSettings()


def users(kind: str, name: str, labels: dict[str, str] | None = None) -> Body:
    """An object someone else created (with kubectl)."""
    return {
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"user-{kind}",
            "resourceVersion": "7",
            "labels": labels or {},
            "managedFields": [{"manager": "kubectl-create", "operation": "Update"}],
        },
    }


def ready(change: StatusChange) -> tuple[str, str, str]:
    found = next(c for c in change.status["conditions"] if c["type"] == "Ready")
    return found["status"], found["reason"], found["message"]


def kstatus(change: StatusChange) -> dict[str, str]:
    return {c["type"]: c["status"] for c in change.status["conditions"]}


def groups_written(decision: Decision) -> set[str]:
    return {g.group for g in decision.groups}


# --- ownership -----------------------------------------------------------------------------


def test_ours_means_our_labels_and_a_tiergate_owner_or_our_field_manager() -> None:
    owner = {"apiVersion": "tiergate.dev/v1alpha1", "kind": "ApiKeyTier", "name": "t", "uid": "u"}
    labelled = users("ConfigMap", "x", dict(MANAGED_BY))
    assert not is_ours(labelled) and not may_delete(labelled)  # a copy of our labels
    owned = copy.deepcopy(labelled)
    owned["metadata"]["ownerReferences"] = [owner]
    assert is_ours(owned) and may_delete(owned)
    foreign_owner = copy.deepcopy(labelled)
    foreign_owner["metadata"]["ownerReferences"] = [{**owner, "apiVersion": "example.com/v1"}]
    assert not is_ours(foreign_owner)
    unlabelled = users("ConfigMap", "x")
    unlabelled["metadata"]["managedFields"] = [{"manager": OPERATOR, "operation": "Apply"}]
    assert is_ours(unlabelled) and not may_delete(unlabelled)  # ours, labels removed: kept
    assert describe_holder(users("Service", "x")) == "written by kubectl-create"
    assert describe_holder(foreign_owner) == "owned by ApiKeyTier t"


# --- decide --------------------------------------------------------------------------------


def test_a_user_object_with_our_labels_blocks_only_its_gateway() -> None:
    store = example_store()
    store.put_child(users("ConfigMap", ACME, {**MANAGED_BY, "tiergate.dev/gateway": ACME}))
    decision = decide(NS, store.namespace(NS), SETTINGS, NOW)
    assert ACME not in groups_written(decision) and SHARED in groups_written(decision)
    assert not [m for m in decision.apply if m["metadata"]["name"] == ACME]
    assert decision.delete == ()  # never deleted either: it is not ours
    role = next(m for m in decision.apply if m["kind"] == "Role")
    assert role["rules"][0]["resourceNames"] == [SHARED]  # its pods may not read the user's
    changes = {c.ref.name: c for c in decision.statuses}
    status, reason, message = ready(changes["enterprise-acme"])
    assert (status, reason) == ("False", "GatewayNameConflict")
    assert f"ConfigMap {ACME} (written by kubectl-create)" in message
    assert kstatus(changes["enterprise-acme"])["Stalled"] == "True"
    assert kstatus(changes["enterprise-acme"])["Accepted"] == "True"  # the spec is fine
    assert changes["enterprise-acme"].warning == ("GatewayNameConflict", message)
    assert ready(changes["deepseek-chat"])[1] == "GatewayNameConflict"  # served by acme too
    assert ready(changes["startup"])[1] != "GatewayNameConflict"
    assert decision.found == {}  # the watches see it: no polling


def test_names_the_store_does_not_know_are_probed_then_created() -> None:
    decision = decide(NS, example_store().namespace(NS), SETTINGS, NOW)
    assert {(r.kind, r.name) for r in decision.unverified} >= {
        ("ConfigMap", ACME),
        ("Service", SHARED),
    }
    assert all(isinstance(w, Create) for g in decision.groups for w in g.writes)


def test_a_probed_holder_blocks_its_gateway_and_is_retried_with_backoff() -> None:
    state = example_store().namespace(NS)
    probed: dict[tuple[str, str], Body | Failure] = {("Service", ACME): users("Service", ACME)}
    decision = decide(NS, state, SETTINGS, NOW, {}, probed)
    assert ACME not in groups_written(decision) and ACME in decision.found
    retries = next_retries({}, decision, {}, NOW)
    assert retries[ACME].attempts == 1 and retries[ACME].next_attempt == NOW + timedelta(seconds=2)
    statuses = {c.ref.name: c for c in report(NS, state, decision, SETTINGS, NOW, retries, {})}
    message = ready(statuses["enterprise-acme"])[2]
    assert f"Service {ACME}" in message
    assert "1 attempt failed, next attempt 2 at 2026-11-28T12:00:02Z" in message

    # Before the next attempt: held back, nothing of it is written or probed.
    held = decide(NS, state, SETTINGS, NOW + timedelta(seconds=1), retries)
    assert ACME not in groups_written(held)
    assert all(ref.name != ACME for ref in held.unverified)
    assert next_retries(retries, held, {}, NOW)[ACME] == retries[ACME]
    # Then retried; found again, the next wait doubles.
    due = decide(NS, state, SETTINGS, NOW + timedelta(seconds=2), retries)
    assert ACME in groups_written(due)
    again = decide(NS, state, SETTINGS, NOW + timedelta(seconds=2), retries, probed)
    later = next_retries(retries, again, {}, NOW + timedelta(seconds=2))
    assert later[ACME].attempts == 2
    assert later[ACME].next_attempt == NOW + timedelta(seconds=6)
    # Once the name is free, the group is written and forgotten.
    assert next_retries(later, due, {}, NOW + timedelta(seconds=6)) == {}


def test_a_changed_spec_is_retried_at_once() -> None:
    store = example_store()
    state = store.namespace(NS)
    probed: dict[tuple[str, str], Body | Failure] = {("Service", ACME): users("Service", ACME)}
    retries = next_retries({}, decide(NS, state, SETTINGS, NOW, {}, probed), {}, NOW)
    state.tiers["enterprise-acme"]["spec"]["replicas"] = 2
    assert ACME in groups_written(decide(NS, state, SETTINGS, NOW, retries))


def test_a_probed_object_of_ours_is_applied_with_its_uid() -> None:
    state = example_store().namespace(NS)
    ours = users("Service", ACME)  # its labels were removed, our field manager wrote it
    ours["metadata"]["managedFields"] = [{"manager": OPERATOR, "operation": "Apply"}]
    decision = decide(NS, state, SETTINGS, NOW, {}, {("Service", ACME): ours})
    writes = next(g for g in decision.groups if g.group == ACME).writes
    service = next(w for w in writes if isinstance(w, Apply) and w.manifest["kind"] == "Service")
    assert service.uid == "user-Service"


def test_a_user_object_holding_the_access_names_blocks_every_gateway() -> None:
    state = example_store().namespace(NS)
    probed: dict[tuple[str, str], Body | Failure] = {
        ("ServiceAccount", "tiergate-gateway"): users("ServiceAccount", "tiergate-gateway")
    }
    decision = decide(NS, state, SETTINGS, NOW, {}, probed)
    assert decision.groups == () and decision.delete == ()
    assert NAMESPACE_ACCESS in decision.found
    retries = next_retries({}, decision, {}, NOW)
    assert set(retries) == {NAMESPACE_ACCESS}  # one retry: the gateways wait for it
    for change in report(NS, state, decision, SETTINGS, NOW, retries, {}):
        status, reason, message = ready(change)
        assert (status, reason) == ("False", "GatewayNameConflict"), change.ref.name
        assert "ServiceAccount tiergate-gateway" in message
        assert "TIERGATE_GATEWAY_SERVICE_ACCOUNT" in message


def test_deletes_only_objects_with_our_labels_and_a_tiergate_owner() -> None:
    store = example_store()
    settle(store, list(decide(NS, store.namespace(NS), SETTINGS, NOW).apply))
    children = store.namespace(NS).children
    # Someone took the PDB out of tiergate's hands (no owner): it is left alone.
    children[("PodDisruptionBudget", ACME)]["metadata"]["ownerReferences"] = []
    store.remove_tier(NS, "enterprise-acme")
    decision = decide(NS, store.namespace(NS), SETTINGS, NOW)
    assert sorted(f"{d.ref.kind}/{d.ref.name}" for d in decision.delete) == [
        f"ConfigMap/{ACME}",
        f"Deployment/{ACME}",
        f"Service/{ACME}",
    ]
    assert {d.uid for d in decision.delete} == {"x"}  # the uid is the delete's precondition


def test_transient_failures_read_as_reconciling_refusals_as_stalled() -> None:
    state = example_store().namespace(NS)
    decision = decide(NS, state, SETTINGS, NOW)
    for failure, expected in (
        (Failure("GatewayWriteFailed", "no answer", transient=True), ("True", "False")),
        (Failure("GatewayWriteFailed", "422", transient=False), ("False", "True")),
    ):
        retries = next_retries({}, decision, {ACME: failure}, NOW)
        changes = report(NS, state, decision, SETTINGS, NOW, retries, {ACME: failure})
        acme = next(c for c in changes if c.ref.name == "enterprise-acme")
        conditions = kstatus(acme)
        assert (conditions["Reconciling"], conditions["Stalled"]) == expected
        assert conditions["Ready"] == "False"


# --- act, against a fake API ------------------------------------------------------------------


class FakeKube(KubeApi):
    """Records writes; refuses what ``refuse`` names with the given error."""

    def __init__(
        self, refuse: dict[tuple[str, str], KubeError] | None = None, store: Store | None = None
    ) -> None:
        self.refuse, self.store = refuse or {}, store or Store()
        self.calls: list[tuple[str, str, str]] = []
        self.objects: dict[tuple[str, str], Body] = {}

    def _check(self, verb: str, kind: str, name: str) -> None:
        self.calls.append((verb, kind, name))
        if error := self.refuse.get((kind, name)):
            raise error

    async def create(self, manifest: Body) -> Body:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        self._check("create", kind, name)
        body = copy.deepcopy(manifest)
        body["metadata"] |= {"uid": f"uid-{kind}", "resourceVersion": "1"}
        self.objects[(kind, name)] = body
        return body

    async def apply(self, manifest: Body, uid: str | None = None) -> Body:
        self._check("apply", manifest["kind"], manifest["metadata"]["name"])
        return copy.deepcopy(manifest)

    async def hand_fields_to_apply(self, body: Body) -> Body:
        return body

    async def get_metadata(self, ref: ObjectRef) -> Body | None:
        return None

    async def delete(self, ref: ObjectRef, uid: str | None = None) -> None:
        self._check("delete", ref.kind, ref.name)

    async def patch_status(self, ref: ObjectRef, status: Body) -> Body:
        self._check("status", ref.kind, ref.name)
        if (ref.kind, ref.name) in self.refuse:
            raise NotFound(404, "NotFound", "gone")
        state = self.store.namespace(ref.namespace)
        bucket = state.routes if ref.kind == "ModelRoute" else state.tiers
        return {**copy.deepcopy(bucket[ref.name]), "status": status}

    async def event(
        self, involved: Body, *, type_: str, reason: str, message: str, now: Any
    ) -> None:
        self.calls.append(("event", reason, involved["metadata"]["name"]))

    async def close(self) -> None:
        pass


REFUSED = Invalid(
    422,
    "Invalid",
    'Deployment.apps "tiergate-enterprise-acme" is invalid: spec.selector: field is immutable',
)


async def test_a_refused_write_stops_only_its_gateway() -> None:
    kube = FakeKube({("Deployment", ACME): REFUSED})
    decision = decide(NS, example_store().namespace(NS), SETTINGS, NOW)
    outcome = await act(kube, decision)
    assert set(outcome.failed) == {ACME}
    failure = outcome.failed[ACME]
    assert failure.reason == "GatewayWriteFailed" and not failure.transient
    assert f"creating Deployment {ACME} failed: Invalid (422)" in failure.message
    assert "field is immutable" in failure.message
    written = {(v, k, n) for v, k, n in kube.calls if v == "create"}
    assert ("create", "Deployment", SHARED) in written  # the other gateway is written
    assert ("create", "ConfigMap", ACME) in written  # (configs go first)


async def test_a_refused_config_stops_its_gateway_before_its_workload() -> None:
    kube = FakeKube({("ConfigMap", ACME): REFUSED})
    outcome = await act(kube, decide(NS, example_store().namespace(NS), SETTINGS, NOW))
    assert set(outcome.failed) == {ACME}
    assert not [c for c in kube.calls if c[2] == ACME and c[1] != "ConfigMap"]
    assert ("create", "Deployment", SHARED) in kube.calls


async def test_the_reconciler_writes_every_status_despite_a_failure_then_backs_off() -> None:
    store = example_store()
    kube = FakeKube({("Deployment", ACME): Unreachable(0, "Timeout", "no answer")}, store)
    clock = [NOW]
    reconciler = Reconciler(store, kube, SETTINGS, clock=lambda: clock[0])
    await reconciler.reconcile(NS)
    statuses = {n for v, k, n in kube.calls if v == "status"}
    assert statuses == {"deepseek-chat", "startup", "enterprise-acme"}
    events = {(reason, name) for v, reason, name in kube.calls if v == "event"}
    assert ("GatewayWriteFailed", "enterprise-acme") in events
    assert ("GatewayWriteFailed", "startup") not in events

    # A pass before the retry is due writes nothing of that gateway.
    kube.calls.clear()
    clock[0] = NOW + timedelta(seconds=1)
    await reconciler.reconcile(NS)
    assert not [c for c in kube.calls if c[2] == ACME and c[0] in ("create", "apply")]
    # When it is due, it is tried again (attempt 2, then a 4 s wait).
    clock[0] = NOW + timedelta(seconds=3)
    await reconciler.reconcile(NS)
    assert ("create", "Deployment", ACME) in kube.calls
    await reconciler.close()


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (Unreachable(0, "Timeout", "no answer"), True),
        (KubeError(503, "ServiceUnavailable", "etcd"), True),
        (KubeError(429, "TooManyRequests", "slow down"), True),
        (KubeError(403, "Forbidden", 'admission webhook "x" denied the request: no'), False),
        (REFUSED, False),
    ],
)
async def test_what_counts_as_transient(error: KubeError, transient: bool) -> None:
    kube = FakeKube({("Deployment", ACME): error})
    outcome = await act(kube, decide(NS, example_store().namespace(NS), SETTINGS, NOW))
    assert outcome.failed[ACME].transient is transient
    assert error.message.split(":")[0] in outcome.failed[ACME].message


def test_fields_our_create_recorded_pass_to_our_apply_manager() -> None:
    update = {"manager": OPERATOR, "operation": "Update", "apiVersion": "v1"}
    created = {**update, "fieldsV1": {"f:data": {"f:x": {}, "f:y": {}}}}
    status = {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"}
    assert fields_handed_to_apply([created, status]) == [
        {**created, "operation": "Apply"},
        status,
    ]
    applied = {**update, "operation": "Apply", "fieldsV1": {"f:data": {"f:z": {}}}}
    assert fields_handed_to_apply([applied, created]) == [
        {**applied, "fieldsV1": {"f:data": {"f:z": {}, "f:x": {}, "f:y": {}}}}
    ]
