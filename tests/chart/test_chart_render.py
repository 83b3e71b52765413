"""`helm lint` and `helm template` with the real pinned helm: the schema rejects bad values,
the rendered objects carry what the operator and the cluster need."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pytest
import yaml

from tests.support.chart import CHART, REPO, template
from tiergate_contract.ledger import (
    DEFAULT_SPEND_HEARTBEAT_SECONDS,
    DEFAULT_SPEND_REPORT_SECONDS,
    quiet_report_max_age,
)
from tiergate_devkit.cluster import ControlPlane
from tiergate_operator.settings import SettingsError, load_operator_settings

pytestmark = pytest.mark.cluster


def rendered(plane: ControlPlane, *args: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(template(plane, *args).stdout) if d]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name or ''}: found {len(found)}"
    return found[0]


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--set", "replicaCount=3"],
        ["--set", "networkPolicy.enabled=true,serviceMonitor.enabled=true,crds.keep=false"],
    ],
)
def test_helm_lint_passes_strict(control_plane: ControlPlane, extra: list[str]) -> None:
    for strict in ([], ["--strict"]):
        result = control_plane.helm("lint", str(CHART), *strict, *extra)
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("replicas=2", "additional properties 'replicas' not allowed"),
        ("gateway.shared.replica=2", "additional properties 'replica' not allowed"),
        ("crds.kep=false", "additional properties 'kep' not allowed"),
        ("replicaCount=two", "/replicaCount': got string, want integer"),
        ("crds.keep=maybe", "/crds/keep': got string, want boolean"),
        ("gateway.image.pullPolicy=Sometimes", "/gateway/image/pullPolicy"),
        ("gateway.redis.url=redis://user:hunter2@redis:6379", "/gateway/redis/url"),
        ("gateway.redis.url=redis+sentinel://sentinel:26379", "/gateway/redis/url"),
        ("gateway.redis.secretRef.name=Redis_URL", "/gateway/redis/secretRef/name"),
        ("gateway.redis.secretRef.key=a/b", "/gateway/redis/secretRef/key"),
        ("resources.requests.cpu=lots", "/resources/requests/cpu"),
        ("gateway.tuning.maxBodyByte=1", "additional properties 'maxBodyByte' not allowed"),
        ("gateway.tuning.accessLogSample=2", "/gateway/tuning/accessLogSample"),
        ("gateway.tuning.logFormat=xml", "/gateway/tuning/logFormat"),
    ],
)
def test_schema_rejects_unknown_keys_and_wrong_types(
    control_plane: ControlPlane, value: str, message: str
) -> None:
    for command in (
        ["lint", str(CHART), "--strict"],
        ["template", "t", str(CHART), "--kube-version", "1.37.2"],
    ):
        result = control_plane.helm(*command, "--set", value, check=False)
        assert result.returncode != 0, f"helm {command[0]} accepted {value}"
        assert message in result.stdout + result.stderr, result.stdout + result.stderr


def test_one_replica_runs_standalone_hardened_with_probes(control_plane: ControlPlane) -> None:
    objects = rendered(control_plane)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = env_of(deployment)
    assert env["TIERGATE_STANDALONE"] == "1"
    assert "TIERGATE_PEERING" not in env
    assert env["TIERGATE_LIVENESS"] == "http://0.0.0.0:8080/healthz"
    assert env["TIERGATE_GATEWAY_IMAGE"] == "ghcr.io/tiergate/tiergate-gateway:0.1.0"
    assert env["TIERGATE_SHARED_REPLICAS"] == "2"
    assert env["TIERGATE_SHARED_CPU_REQUEST"] == "100m"
    assert env["TIERGATE_DEDICATED_MEMORY_LIMIT"] == "512Mi"
    assert env["TIERGATE_GATEWAY_SERVICE_ACCOUNT"] == "tiergate-gateway"
    assert "TIERGATE_REDIS_URL" not in env
    assert container["image"] == "ghcr.io/tiergate/tiergate-operator:0.1.0"
    assert container["command"] == ["python", "-m", "tiergate_operator"]
    # Liveness is kopf's endpoint; readiness the operator's own, on a port of its own.
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ready"}
    assert env["TIERGATE_READINESS"] == "http://0.0.0.0:8081/readyz"
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert {"name": "ready", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"] == {
        "cpu": "100m",
        "memory": "128Mi",
        "ephemeral-storage": "64Mi",
    }
    assert container["resources"]["limits"]["ephemeral-storage"] == "256Mi"
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert not [o for o in objects if o["kind"] == "ClusterKopfPeering"]
    # One replica: no budget (it would block every drain) and no anti-affinity to ask for.
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert "affinity" not in pod
    chart_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["helm.sh/chart"] == f"tiergate-{chart_version}", obj["kind"]
        assert labels["app.kubernetes.io/instance"] == "t", obj["kind"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", obj["kind"]
        assert labels["app.kubernetes.io/version"] == "0.1.0", obj["kind"]
        assert labels["app.kubernetes.io/part-of"] == "tiergate", obj["kind"]


def test_values_reach_the_operator_environment(control_plane: ControlPlane) -> None:
    objects = rendered(
        control_plane,
        "--set",
        "replicaCount=2",
        "--set",
        "gateway.image.tag=9.9.9",
        "--set",
        "gateway.shared.replicas=5",
        "--set",
        "gateway.dedicated.resources.limits.cpu=2",
        "--set",
        "gateway.redis.secretRef.name=tiergate-redis",
        "--set",
        "image.digest=sha256:" + "a" * 64,
        "--set",
        "peering.name=mine",
        "--set",
        "ledger.staleSeconds=300",
    )
    deployment = one(objects, "Deployment")
    env = env_of(deployment)
    assert env["TIERGATE_PEERING"] == "mine"
    assert env["TIERGATE_LEDGER_STALE_SECONDS"] == "300"
    assert "TIERGATE_STANDALONE" not in env
    assert env["TIERGATE_GATEWAY_IMAGE"] == "ghcr.io/tiergate/tiergate-gateway:9.9.9"
    assert env["TIERGATE_SHARED_REPLICAS"] == "5"
    assert env["TIERGATE_DEDICATED_CPU_LIMIT"] == "2"
    # The operator is told only where the gateways find the URL, never the URL itself.
    assert env["TIERGATE_REDIS_SECRET_NAME"] == "tiergate-redis"
    assert env["TIERGATE_REDIS_SECRET_KEY"] == "redis-url"
    assert "TIERGATE_REDIS_URL" not in env
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/tiergate/tiergate-operator@sha256:" + "a" * 64
    # No fixed priority: each replica draws its own (kopf freezes peers of equal priority).
    assert "TIERGATE_PEERING_PRIORITY" not in env
    assert container["command"] == ["python", "-m", "tiergate_operator"]
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert one(objects, "ClusterKopfPeering", "mine")["apiVersion"] == "kopf.dev/v1"
    rules = one(objects, "ClusterRole")["rules"]
    assert {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "resourceNames": ["mine"],
        "verbs": ["get", "patch"],
    } in rules


def test_peers_get_a_disruption_budget_and_prefer_distinct_nodes(
    control_plane: ControlPlane,
) -> None:
    objects = rendered(control_plane, "--set", "replicaCount=3")
    selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    budget = one(objects, "PodDisruptionBudget", "t-tiergate")
    assert budget["apiVersion"] == "policy/v1"
    assert budget["metadata"]["namespace"] == "default"
    assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    affinity = one(objects, "Deployment")["spec"]["template"]["spec"]["affinity"]
    (term,) = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": selector},
    }

    objects = rendered(
        control_plane,
        "--set",
        "replicaCount=2,podDisruptionBudget.minAvailable=50%,podDisruptionBudget.maxUnavailable=null",
        "--set-json",
        'affinity={"nodeAffinity":{}}',
    )
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == "50%"
    assert "maxUnavailable" not in one(objects, "PodDisruptionBudget")["spec"]
    # A user's affinity replaces the default one.
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["affinity"] == {
        "nodeAffinity": {}
    }
    objects = rendered(control_plane, "--set", "replicaCount=2,podDisruptionBudget.enabled=false")
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            "replicaCount=2,podDisruptionBudget.minAvailable=1",
            "set exactly one of maxUnavailable and minAvailable",
        ),
        ("podDisruptionBudget.maxUnavailable=lots", "/podDisruptionBudget/maxUnavailable"),
        ("health.readinessPort=8080", "health.readinessPort must differ from health.port"),
    ],
)
def test_bad_budget_or_probe_values_fail(
    control_plane: ControlPlane, values: str, message: str
) -> None:
    result = template(control_plane, "--set", values, check=False)
    assert result.returncode != 0, values
    assert message in result.stderr, result.stderr


def test_the_removed_existing_secret_value_fails_with_directions(
    control_plane: ControlPlane,
) -> None:
    # `helm lint` reports a template's `fail` only as INFO; install, upgrade and template fail.
    result = control_plane.helm(
        "template",
        "t",
        str(CHART),
        "--kube-version",
        "1.37.2",
        "--set",
        "gateway.redis.existingSecret.name=redis-url",
        check=False,
    )
    assert result.returncode != 0
    assert "gateway.redis.existingSecret was replaced by gateway.redis.secretRef" in result.stderr


@pytest.mark.parametrize(
    "tuning",
    [
        {},  # the gateway's defaults: above 2 x 60 + 5 = 125
        {"spendHeartbeatSeconds": 3.5},
        {"spendHeartbeatSeconds": 3.7, "spendReportSeconds": 1},  # 8.4
        {"spendReportSeconds": 30},
        {"spendHeartbeatSeconds": "0.35", "spendReportSeconds": 0.3},  # as --set-string passes it
    ],
)
def test_a_stale_time_within_two_heartbeats_fails_as_the_operator_would_refuse_it(
    control_plane: ControlPlane, tuning: dict[str, object]
) -> None:
    """ledger.staleSeconds must be greater than 2 x spendHeartbeatSeconds + spendReportSeconds
    (the contract's defaults when unset): the greatest whole number not above the bound fails
    with the operator's words, the next one renders and the operator accepts what it renders."""
    report = tuning.get("spendReportSeconds", DEFAULT_SPEND_REPORT_SECONDS)
    heartbeat = tuning.get("spendHeartbeatSeconds", DEFAULT_SPEND_HEARTBEAT_SECONDS)
    floor = quiet_report_max_age(Decimal(str(report)), Decimal(str(heartbeat)))
    refused, accepted = math.floor(floor), math.floor(floor) + 1
    values = ["--set-json", f"gateway.tuning={json.dumps(tuning)}"]

    result = template(
        control_plane, *values, "--set", f"ledger.staleSeconds={refused}", check=False
    )
    assert result.returncode != 0, f"helm accepted ledger.staleSeconds={refused} with {tuning}"
    with pytest.raises(SettingsError) as caught:
        load_operator_settings(
            {
                "TIERGATE_LEDGER_STALE_SECONDS": str(refused),
                "TIERGATE_GATEWAY_TUNING": json.dumps(tuning),
            }
        )
    operator_words = str(caught.value)
    rule = operator_words[operator_words.index("must be greater than") :]
    assert f"ledger.staleSeconds={refused} {rule}" in result.stderr, result.stderr

    objects = rendered(control_plane, *values, "--set", f"ledger.staleSeconds={accepted}")
    env = env_of(one(objects, "Deployment"))
    assert env["TIERGATE_LEDGER_STALE_SECONDS"] == str(accepted)
    settings = load_operator_settings({k: v for k, v in env.items() if isinstance(v, str)})
    assert settings.ledger_stale_seconds == accepted


@pytest.mark.parametrize(
    "url",
    [
        "redis://redis.infra:6379/0",
        "rediss+sentinel://sentinel.infra:26379/tiergate/1",
        "redis+cluster://node-0.infra:6379",
    ],
)
def test_a_plain_redis_url_reaches_the_operator_as_is(
    control_plane: ControlPlane, url: str
) -> None:
    env = env_of(one(rendered(control_plane, "--set", f"gateway.redis.url={url}"), "Deployment"))
    assert env["TIERGATE_REDIS_URL"] == url
    assert "TIERGATE_REDIS_SECRET_NAME" not in env


def test_crd_templates_render_the_source_crds(control_plane: ControlPlane) -> None:
    sources = {
        d["metadata"]["name"]: d
        for d in (
            yaml.safe_load((REPO / "crds" / f).read_text())
            for f in ("modelroutes.yaml", "apikeytiers.yaml", "spendreports.yaml")
        )
    }
    kept = {
        o["metadata"]["name"]: o
        for o in rendered(control_plane)
        if o["kind"] == "CustomResourceDefinition"
    }
    assert kept.keys() == sources.keys()
    for name, crd in kept.items():
        assert crd["spec"] == sources[name]["spec"], name
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert sources[name]["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
    owned = [
        o
        for o in rendered(control_plane, "--set", "crds.keep=false")
        if o["kind"] == "CustomResourceDefinition"
    ]
    assert len(owned) == 3 and all("annotations" not in o["metadata"] for o in owned)
    assert not [
        o
        for o in rendered(control_plane, "--set", "crds.enabled=false")
        if o["kind"] == "CustomResourceDefinition"
    ]


def test_kopf_peering_crd_ships_in_helm_crds_dir(control_plane: ControlPlane) -> None:
    with_crds = template(control_plane, "--include-crds").stdout
    assert "name: clusterkopfpeerings.kopf.dev" in with_crds
    assert "clusterkopfpeerings.kopf.dev" not in template(control_plane, "--skip-crds").stdout


def test_service_monitor_and_network_policies_select_the_gateways(
    control_plane: ControlPlane,
) -> None:
    objects = rendered(
        control_plane,
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.gatewayNamespaces={team-a,team-b}",
    )
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/part-of": "tiergate",
        "app.kubernetes.io/component": "gateway",
    }
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    gateways = {
        p["metadata"]["namespace"]: p
        for p in policies
        if p["metadata"]["name"].endswith("-gateways")
    }
    assert gateways.keys() == {"team-a", "team-b"}
    for policy in gateways.values():
        assert (
            policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            == "tiergate-gateway"
        )
        assert policy["spec"]["ingress"] == [
            {"from": [{"podSelector": {}}], "ports": [{"port": "http", "protocol": "TCP"}]}
        ]
    denied = rendered(
        control_plane,
        "--set",
        "networkPolicy.enabled=true",
        "--set-json",
        "networkPolicy.gatewayIngressFrom=[]",
    )
    gateway_policy = next(o for o in denied if o["metadata"]["name"].endswith("-gateways"))
    assert gateway_policy["spec"]["ingress"] == [], "no peers must mean deny, not allow-all"


def test_gateway_tuning_reaches_every_gateway_through_the_operator(
    control_plane: ControlPlane,
) -> None:
    """chart value -> the operator's TIERGATE_GATEWAY_TUNING -> each gateway's own variables."""
    objects = rendered(
        control_plane,
        "--set",
        "gateway.tuning.maxBodyBytes=1048576",
        "--set",
        "gateway.tuning.accessLogSample=0.1",
        "--set-json",
        "gateway.tuning.ttftBuckets=[0.2,0.5,1]",
    )
    env = env_of(one(objects, "Deployment"))
    tuning = env["TIERGATE_GATEWAY_TUNING"]
    settings = load_operator_settings({"TIERGATE_GATEWAY_TUNING": tuning})
    assert dict(settings.gateway_tuning) == {
        "TIERGATE_GATEWAY_ACCESS_LOG_SAMPLE": "0.1",
        "TIERGATE_GATEWAY_MAX_BODY_BYTES": "1048576",
        "TIERGATE_GATEWAY_TTFT_BUCKETS": "0.2,0.5,1.0",
    }
    assert "TIERGATE_GATEWAY_TUNING" not in env_of(one(rendered(control_plane), "Deployment"))
