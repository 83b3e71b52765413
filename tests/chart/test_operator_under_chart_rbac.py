"""The operator, run locally with a token of the chart's ServiceAccount, reconciles every
example: the chart's RBAC is sufficient (and test_chart_install shows it is not more)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.chart import InstalledChart
from tests.support.kube import EXAMPLE_OBJECTS, EXAMPLES, get
from tests.support.operator_process import running_operator
from tiergate_devkit.cluster import ControlPlane

pytestmark = pytest.mark.cluster


def test_chart_identity_reconciles_every_example(
    control_plane: ControlPlane, installed_chart: InstalledChart, tmp_path: Path
) -> None:
    _, namespace, service_account = installed_chart
    token = control_plane.kubectl(
        "-n", namespace, "create", "token", service_account, "--duration=1h"
    ).stdout.strip()
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "chart-sa.kubeconfig", token)
    log = tmp_path / "operator.log"
    with running_operator(control_plane, log, kubeconfig=kubeconfig):
        control_plane.kubectl("-n", namespace, "apply", "-k", str(EXAMPLES))
        control_plane.kubectl(
            "-n",
            namespace,
            "wait",
            "--for=condition=Ready",
            "--timeout=90s",
            *EXAMPLE_OBJECTS,
            timeout=100,
        )
    text = log.read_text()
    # A status 403, not the milliseconds of a log line's time ("15:45:01,403 INFO ...").
    denied = re.search(r"(?<![,\d])403\b", text)
    assert not denied and "Forbidden" not in text, "the chart's RBAC denied the operator"
    for gateway in ("tiergate-shared", "tiergate-enterprise-acme"):
        assert (
            get(control_plane, namespace, "deployment", gateway)["spec"]["template"]["spec"][
                "serviceAccountName"
            ]
            == "tiergate-gateway"
        )
    role = get(control_plane, namespace, "role", "tiergate-gateway")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["tiergate-enterprise-acme", "tiergate-shared"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["tiergate.dev"],
            "resources": ["spendreports"],
            "verbs": ["create", "get", "list", "watch", "update", "patch"],
        },
        {
            "apiGroups": ["tiergate.dev"],
            "resources": ["apikeytiers"],
            "verbs": ["get", "list", "watch"],
        },
    ]
