"""The chart on the real control plane: install, least-privilege RBAC, upgrade, NOTES."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.chart import (
    CHART,
    InstalledChart,
    exists,
    fullname,
    get_json,
    install,
    release_name,
    uninstall,
)
from tests.support.kube import EXAMPLES, eventually
from tiergate_devkit.cluster import ControlPlane

pytestmark = pytest.mark.cluster

ALLOWED = [
    # (verb, resource, subresource); checked in the release's namespace and in another one
    ("patch", "modelroutes.tiergate.dev", "status"),
    ("patch", "apikeytiers.tiergate.dev", "status"),
    ("watch", "modelroutes.tiergate.dev", ""),
    ("list", "apikeytiers.tiergate.dev", ""),
    ("watch", "secrets", ""),
    ("create", "deployments.apps", ""),
    ("delete", "deployments.apps", ""),
    ("patch", "configmaps", ""),
    ("create", "services", ""),
    ("create", "poddisruptionbudgets.policy", ""),
    ("patch", "horizontalpodautoscalers.autoscaling", ""),
    ("create", "serviceaccounts", ""),
    ("create", "roles.rbac.authorization.k8s.io", ""),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""),
    ("create", "events", ""),
    ("create", "events.events.k8s.io", ""),
    ("delete", "spendreports.tiergate.dev", ""),
    ("patch", "spendreports.tiergate.dev", ""),
    ("watch", "spendreports.tiergate.dev", ""),
]
DENIED = [
    ("create", "secrets", ""),
    ("update", "secrets", ""),
    ("patch", "secrets", ""),
    ("delete", "secrets", ""),
    ("deletecollection", "secrets", ""),
    ("update", "modelroutes.tiergate.dev", ""),
    ("patch", "modelroutes.tiergate.dev", ""),
    ("update", "apikeytiers.tiergate.dev", ""),
    ("delete", "modelroutes.tiergate.dev", ""),
    ("delete", "apikeytiers.tiergate.dev", ""),
    ("deletecollection", "spendreports.tiergate.dev", ""),
    ("create", "pods", "exec"),
    ("get", "pods", ""),
    ("create", "pods", ""),
    ("create", "pods", "portforward"),
    ("escalate", "roles.rbac.authorization.k8s.io", ""),
    ("bind", "clusterroles.rbac.authorization.k8s.io", ""),
    ("create", "serviceaccounts", "token"),
    ("patch", "namespaces", ""),
]
CLUSTER_DENIED = [
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("update", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("patch", "clusterkopfpeerings.kopf.dev"),  # only with replicaCount > 1
]


def can_i(
    plane: ControlPlane,
    chart: InstalledChart,
    verb: str,
    resource: str,
    subresource: str = "",
    namespace: str | None = None,
) -> bool:
    args = [
        "auth",
        "can-i",
        verb,
        resource,
        f"--as=system:serviceaccount:{chart.namespace}:{chart.service_account}",
    ]
    if subresource:
        args.append(f"--subresource={subresource}")
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    result = plane.kubectl(*args, check=False)
    answer = result.stdout.strip()
    assert answer in {"yes", "no"}, f"kubectl {' '.join(args)}: {result.stdout} {result.stderr}"
    return answer == "yes"


def can_i_all(
    plane: ControlPlane, chart: InstalledChart, checks: Sequence[tuple[str, str, str, str | None]]
) -> list[bool]:
    """``kubectl auth can-i`` for each (verb, resource, subresource, namespace or None = all)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda check: can_i(plane, chart, *check), checks))


def test_install_makes_the_operator_available_on_the_kwok_node(
    control_plane: ControlPlane, installed_chart: InstalledChart
) -> None:
    release, namespace, service_account = installed_chart
    deployment = get_json(control_plane, "-n", namespace, "deployment", fullname(release))
    available = [c for c in deployment["status"]["conditions"] if c["type"] == "Available"]
    assert available and available[0]["status"] == "True"
    pods = get_json(
        control_plane,
        "-n",
        namespace,
        "pods",
        "-l",
        f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator",
    )
    assert [p["spec"]["nodeName"] for p in pods["items"]] == ["kwok-node-0"]
    assert pods["items"][0]["status"]["phase"] == "Running"
    assert pods["items"][0]["spec"]["serviceAccountName"] == service_account
    assert exists(control_plane, "-n", namespace, "serviceaccount", service_account)
    status = control_plane.helm("status", release, "-n", namespace).stdout
    assert "STATUS: deployed" in status
    assert "kubectl -n demo apply -k crds/examples" in status
    assert "kubectl -n demo get mr,akt" in status


def test_operator_service_account_may_do_what_the_operator_needs(
    control_plane: ControlPlane, installed_chart: InstalledChart, namespace: str
) -> None:
    checks = [
        (verb, resource, sub, where)
        for verb, resource, sub in ALLOWED
        for where in (installed_chart.namespace, "default")
    ]
    answers = can_i_all(control_plane, installed_chart, checks)
    refused = [check for check, allowed in zip(checks, answers, strict=True) if not allowed]
    assert not refused, f"the operator may not (verb, resource, subresource, namespace): {refused}"
    assert can_i(
        control_plane, installed_chart, "watch", "customresourcedefinitions.apiextensions.k8s.io"
    )
    assert can_i(control_plane, installed_chart, "list", "namespaces")


def test_operator_service_account_may_not_do_more(
    control_plane: ControlPlane, installed_chart: InstalledChart
) -> None:
    checks = [
        (verb, resource, sub, where)
        for verb, resource, sub in DENIED
        for where in (installed_chart.namespace, "default", None)
    ]
    checks += [(verb, resource, "", None) for verb, resource in CLUSTER_DENIED]
    answers = can_i_all(control_plane, installed_chart, checks)
    granted = [check for check, allowed in zip(checks, answers, strict=True) if allowed]
    assert not granted, f"the operator may (verb, resource, subresource, namespace): {granted}"


def test_cluster_role_grants_exactly_the_documented_rules(
    control_plane: ControlPlane, installed_chart: InstalledChart
) -> None:
    role = get_json(control_plane, "clusterrole", fullname(installed_chart.release))
    granted = {
        (group, resource, verb, tuple(rule.get("resourceNames", ())))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    crud = ("get", "list", "watch", "create", "patch", "update", "delete")
    expected = {
        ("tiergate.dev", r, v, ())
        for r in ("modelroutes", "apikeytiers")
        for v in ("get", "list", "watch")
    }
    expected |= {
        ("tiergate.dev", f"{r}/status", "patch", ()) for r in ("modelroutes", "apikeytiers")
    }
    expected |= {("", "secrets", v, ()) for v in ("get", "list", "watch")}
    # The ledger: folded and released by the operator; written by the gateways (their Role).
    expected |= {("tiergate.dev", "spendreports", v, ()) for v in crud}
    expected |= {
        (g, r, v, ())
        for g, r in [
            ("", "configmaps"),
            ("", "services"),
            ("", "serviceaccounts"),
            ("apps", "deployments"),
            ("policy", "poddisruptionbudgets"),
            ("autoscaling", "horizontalpodautoscalers"),
            ("rbac.authorization.k8s.io", "roles"),
            ("rbac.authorization.k8s.io", "rolebindings"),
            ("monitoring.coreos.com", "prometheusrules"),  # the tiers' SLO alerts
        ]
        for v in crud
    }
    expected |= {(g, "events", v, ()) for g in ("", "events.k8s.io") for v in ("create", "patch")}
    expected |= {
        ("apiextensions.k8s.io", "customresourcedefinitions", v, ())
        for v in ("get", "list", "watch")
    }
    expected |= {("", "namespaces", v, ()) for v in ("get", "list", "watch")}
    assert granted == expected, f"extra: {granted - expected}; missing: {expected - granted}"
    binding = get_json(control_plane, "clusterrolebinding", fullname(installed_chart.release))
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": installed_chart.service_account,
            "namespace": installed_chart.namespace,
        }
    ]


def test_examples_pass_server_side_validation(
    control_plane: ControlPlane, installed_chart: InstalledChart
) -> None:
    result = control_plane.kubectl(
        "-n", installed_chart.namespace, "apply", "-k", str(EXAMPLES), "--dry-run=server"
    )
    assert "modelroute.tiergate.dev/deepseek-chat created (server dry run)" in result.stdout


def test_upgrade_to_two_replicas_switches_to_kopf_peering_and_back(
    control_plane: ControlPlane, installed_chart: InstalledChart
) -> None:
    release, namespace, service_account = installed_chart
    name = fullname(release)

    def upgrade(*values: str) -> None:
        args = [
            "upgrade",
            release,
            str(CHART),
            "-n",
            namespace,
            "--reuse-values",
            "--wait",
            "--timeout",
            "90s",
        ]
        for value in values:
            args += ["--set", value]
        control_plane.helm(*args)

    upgrade("replicaCount=2", "gateway.shared.replicas=3")
    assert exists(control_plane, "clusterkopfpeering", name)
    deployment = get_json(control_plane, "-n", namespace, "deployment", name)
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TIERGATE_PEERING"] == name and "TIERGATE_STANDALONE" not in env
    assert env["TIERGATE_SHARED_REPLICAS"] == "3"
    control_plane.kubectl(
        "-n", namespace, "rollout", "status", f"deployment/{name}", "--timeout=90s"
    )
    assert deployment["spec"]["replicas"] == 2
    chart = InstalledChart(release, namespace, service_account)
    assert can_i(control_plane, chart, "patch", f"clusterkopfpeerings.kopf.dev/{name}")
    assert can_i(control_plane, chart, "watch", "clusterkopfpeerings.kopf.dev")
    assert not can_i(control_plane, chart, "patch", "clusterkopfpeerings.kopf.dev/someone-else")
    assert (
        get_json(control_plane, "-n", namespace, "deployment", name)["status"]["availableReplicas"]
        == 2
    )

    upgrade("replicaCount=1")
    eventually(
        lambda: not exists(control_plane, "clusterkopfpeering", name),
        what="the peering object is removed with the last peer",
    )
    assert not can_i(control_plane, chart, "patch", f"clusterkopfpeerings.kopf.dev/{name}")


def test_fresh_install_with_two_replicas_and_clean_uninstall(
    control_plane: ControlPlane, namespace: str, tiergate_crds: None
) -> None:
    release = release_name()
    name = fullname(release)
    install(control_plane, release, namespace, "replicaCount=2", "crds.enabled=false")
    try:
        deployment = get_json(control_plane, "-n", namespace, "deployment", name)
        assert deployment["status"]["availableReplicas"] == 2
        assert exists(control_plane, "clusterkopfpeering", name)
    finally:
        uninstall(control_plane, release, namespace)
    for kind in ("clusterkopfpeering", "clusterrole", "clusterrolebinding"):
        assert not exists(control_plane, kind, name), f"{kind} {name} survived uninstall"
    assert exists(control_plane, "crd", "clusterkopfpeerings.kopf.dev"), (
        "kopf's shared peering CRD must stay for other kopf operators"
    )


def test_same_values_upgrade_changes_nothing(
    control_plane: ControlPlane, installed_chart: InstalledChart
) -> None:
    """GitOps tools re-apply the chart constantly: the same values must render the same objects."""
    release, namespace, _ = installed_chart
    name = fullname(release)
    objects = [
        ("-n", namespace, "deployment", name),
        ("-n", namespace, "serviceaccount", name),
        ("clusterrole", name),
        ("clusterrolebinding", name),
    ]

    def versions() -> list[str]:
        return [get_json(control_plane, *o)["metadata"]["resourceVersion"] for o in objects]

    before = versions()
    control_plane.helm(
        "upgrade",
        release,
        str(CHART),
        "-n",
        namespace,
        "--reuse-values",
        "--wait",
        "--timeout",
        "60s",
    )
    assert versions() == before, "an upgrade with unchanged values rewrote objects"
