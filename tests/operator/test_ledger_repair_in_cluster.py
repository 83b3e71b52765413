"""The ledger's crash paths on the real control plane: an operator that stopped between the
steps of a fold (a report terminating, folded or not), and a report written by its gateway
after the operator read it (the delete's precondition refuses: 409, nothing folded)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from tests.operator.spend_support import (
    USD,
    create_report,
    create_tier,
    report_body,
    stamp,
    wait_for,
)
from tests.support.kube import apply_crds, get, get_or_none
from tests.support.operator_process import running_operator
from tiergate_devkit.cluster import ControlPlane
from tiergate_operator.kube import KubeApi
from tiergate_operator.ledger_keeper import LedgerKeeper
from tiergate_operator.store import Store

pytestmark = pytest.mark.cluster


def test_an_operator_restart_folds_terminating_reports_once_and_releases_them(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    apply_crds(control_plane)
    create_tier(control_plane, namespace, "t")
    # Deleted by an operator that stopped before folding it.
    create_report(control_plane, namespace, report_body("gw-unfolded-0001", {"t": 3 * USD}))
    # Deleted and folded by an operator that stopped before removing the finalizer.
    create_report(control_plane, namespace, report_body("gw-folded-0001", {"t": 2 * USD}))
    ledger = {
        "lifetimeNano": 2 * USD,
        "lifetimeCalls": 200,
        "months": [],
        "lastUsed": [],
        "folded": ["gw-folded-0001"],
    }
    control_plane.kubectl(
        "-n", namespace, "patch", "apikeytier", "t", "--subresource=status", "--type", "merge",
        "-p", json.dumps({"status": {"ledger": ledger}}),
    )  # fmt: skip
    for name in ("gw-unfolded-0001", "gw-folded-0001"):
        control_plane.kubectl("-n", namespace, "delete", "spendreport", name, "--wait=false")
        assert get(control_plane, namespace, "spendreport", name)["metadata"]["deletionTimestamp"]

    log = tmp_path / "operator.log"
    with running_operator(control_plane, log):
        for name in ("gw-unfolded-0001", "gw-folded-0001"):
            wait_for(
                lambda name=name: (
                    get_or_none(control_plane, namespace, "spendreport", name) is None
                ),
                timeout=60,
                what=f"{name} released after the restart",
            )
        wait_for(
            lambda: get(control_plane, namespace, "apikeytier", "t")["status"].get("spend"),
            what="status.spend",
        )
    assert "Traceback" not in log.read_text()
    status = get(control_plane, namespace, "apikeytier", "t")["status"]
    assert status["ledger"]["folded"] == ["gw-folded-0001", "gw-unfolded-0001"]
    assert status["ledger"]["lifetimeNano"] == 5 * USD  # the folded report is not counted twice
    assert status["spend"]["lifetimeUSD"] == "5"


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[KubeApi]:
    configuration = k8s_client.Configuration()
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(control_plane.kubeconfig), client_configuration=configuration
    )
    api = KubeApi(configuration)
    yield api
    await api.close()


async def test_a_report_written_after_it_was_read_is_not_folded(
    control_plane: ControlPlane, namespace: str, kube: KubeApi
) -> None:
    apply_crds(control_plane)
    create_tier(control_plane, namespace, "t")
    silent = stamp(datetime.now(UTC) - timedelta(minutes=30))
    create_report(control_plane, namespace, report_body("gw-0001", {"t": USD}, reported_at=silent))
    keeper = LedgerKeeper(Store(), kube, stale_seconds=600)
    keeper.put_report(get(control_plane, namespace, "spendreport", "gw-0001"))  # read: stale

    # Its gateway was alive after all and writes again before the operator deletes it.
    alive = report_body("gw-0001", {"t": 2 * USD})
    control_plane.kubectl(
        "-n", namespace, "patch", "spendreport", "gw-0001", "--type", "merge",
        "-p", json.dumps({"spec": alive["spec"]}),
    )  # fmt: skip
    await keeper.work(namespace)
    report = get(control_plane, namespace, "spendreport", "gw-0001")
    assert not report["metadata"].get("deletionTimestamp")  # the delete was refused (409)
    assert report["spec"]["tiers"][0]["months"][0]["spentNano"] == 2 * USD
    assert not (get(control_plane, namespace, "apikeytier", "t").get("status") or {}).get("ledger")
    assert keeper.folded == 0

    # Read again (as the watch delivers it) and silent for good: folded, with the new money.
    control_plane.kubectl(
        "-n", namespace, "patch", "spendreport", "gw-0001", "--type", "merge",
        "-p", '{"spec": {"final": true}}',
    )  # fmt: skip
    keeper.put_report(get(control_plane, namespace, "spendreport", "gw-0001"))
    await keeper.work(namespace)
    assert get_or_none(control_plane, namespace, "spendreport", "gw-0001") is None
    ledger = get(control_plane, namespace, "apikeytier", "t")["status"]["ledger"]
    assert (ledger["folded"], ledger["lifetimeNano"]) == (["gw-0001"], 2 * USD)
    assert keeper.folded == 1
    keeper.close()
