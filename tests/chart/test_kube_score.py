"""kube-score (pinned, built by scripts/build-tools.sh) on everything tiergate puts in a cluster.

Scenarios: the chart's `helm template` output with several sets of values, and the gateway
objects the operator renders for crds/examples (`tiergate render`), scored together with the
chart's gateway NetworkPolicy for their namespace. Every finding must be covered by an entry
of tests/data/kube-score/ignore.yaml, which says why; an entry no finding needs fails too.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.tools import TOOLS_VERSIONS, Tools
from tests.support.chart import CHART, REPO

pytestmark = pytest.mark.cluster

IGNORE_FILE = REPO / "tests" / "data" / "kube-score" / "ignore.yaml"
EXAMPLES = REPO / "crds" / "examples"
GATEWAY_NAMESPACE = "demo"
RELEASE = "t"

# Values of each chart scenario (helm --set); the operator Deployment is "t-tiergate".
CHART_SCENARIOS: dict[str, list[str]] = {
    "defaults": [],
    "replicas": ["replicaCount=3"],
    "budget-min-available": [
        "replicaCount=2",
        "podDisruptionBudget.minAvailable=1",
        "podDisruptionBudget.maxUnavailable=null",
    ],
    "network-policy": [
        "replicaCount=2",
        "networkPolicy.enabled=true",
        "serviceMonitor.enabled=true",
    ],
}
GATEWAYS = "gateways"


@dataclass(frozen=True)
class Finding:
    scenario: str
    object: str  # Kind/name
    check: str
    comment: str  # "container:summary", as kube-score reports it
    grade: int  # 1 critical, 5 warning, 7 almost OK

    def __str__(self) -> str:
        return f"[{self.scenario}] {self.object}: {self.check} ({self.comment}, grade {self.grade})"


@dataclass(frozen=True)
class Rule:
    """A finding pattern: an entry of the ignore list."""

    check: str
    why: str
    objects: tuple[str, ...] = ("*",)
    scenarios: tuple[str, ...] | None = None
    comment: str | None = None

    def matches(self, finding: Finding) -> bool:
        return (
            finding.check == self.check
            and any(fnmatch.fnmatchcase(finding.object, glob) for glob in self.objects)
            and (self.scenarios is None or finding.scenario in self.scenarios)
            and (self.comment is None or finding.comment == self.comment)
        )


def load_ignore_list() -> list[Rule]:
    entries = yaml.safe_load(IGNORE_FILE.read_text())
    rules = []
    for entry in entries:
        unknown = set(entry) - {"check", "why", "objects", "scenarios", "comment"}
        assert not unknown, f"{IGNORE_FILE.name}: unknown fields {sorted(unknown)} in {entry}"
        rules.append(
            Rule(
                check=entry["check"],
                why=entry.get("why") or "",
                objects=tuple(entry.get("objects") or ("*",)),
                scenarios=tuple(entry["scenarios"]) if "scenarios" in entry else None,
                comment=entry.get("comment"),
            )
        )
    return rules


def kube_score(tools: Tools, scenario: str, documents: Sequence[dict[str, Any]]) -> list[Finding]:
    """Every finding kube-score reports (all grades below "all OK", skipped checks left out)."""
    k8s_minor = TOOLS_VERSIONS["K8S_VERSION"].rsplit(".", 1)[0]
    result = subprocess.run(
        [
            str(tools.kube_score),
            "score",
            "--output-format=json",
            f"--kubernetes-version=v{k8s_minor}",
            "-",
        ],
        input=yaml.safe_dump_all(documents),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Exit code 1 only says that something is critical; the JSON says what.
    assert result.returncode in (0, 1), result.stderr
    findings = []
    for scored in json.loads(result.stdout):
        name = f"{scored['type_meta']['kind']}/{scored['object_meta']['name']}"
        for check in scored["checks"]:
            if check["skipped"] or check["grade"] >= 10:
                continue
            comments = check["comments"] or [{"path": "", "summary": ""}]
            findings += [
                Finding(
                    scenario,
                    name,
                    check["check"]["id"],
                    f"{c['path']}:{c['summary']}",
                    check["grade"],
                )
                for c in comments
            ]
    return findings


def helm_template(tools: Tools, values: Iterable[str]) -> list[dict[str, Any]]:
    # No --kube-version: the pinned helm's own default must satisfy the chart's kubeVersion.
    args = [str(tools.helm), "template", RELEASE, str(CHART)]
    for value in values:
        args += ["--set", value]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def rendered_gateways() -> list[dict[str, Any]]:
    tiergate = Path(sys.executable).with_name("tiergate")
    result = subprocess.run(
        [str(tiergate), "render", "-f", str(EXAMPLES), "-n", GATEWAY_NAMESPACE, "-o", "yaml"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def gateway_objects() -> list[dict[str, Any]]:
    return rendered_gateways()


@pytest.fixture(scope="module")
def findings(tools: Tools, gateway_objects: list[dict[str, Any]]) -> dict[str, list[Finding]]:
    found = {
        scenario: kube_score(tools, scenario, helm_template(tools, values))
        for scenario, values in CHART_SCENARIOS.items()
    }
    # The gateways with the chart's NetworkPolicy for their namespace, as a cluster has them.
    policies = [
        d
        for d in helm_template(
            tools,
            [
                "networkPolicy.enabled=true",
                f"networkPolicy.gatewayNamespaces={{{GATEWAY_NAMESPACE}}}",
            ],
        )
        if d["kind"] == "NetworkPolicy" and d["metadata"]["namespace"] == GATEWAY_NAMESPACE
    ]
    assert len(policies) == 1, policies
    found[GATEWAYS] = kube_score(tools, GATEWAYS, [*gateway_objects, *policies])
    return found


def unexplained(findings: Iterable[Finding], rules: Iterable[Rule]) -> list[str]:
    rules = list(rules)
    return [str(f) for f in findings if not any(rule.matches(f) for rule in rules)]


@pytest.mark.parametrize("scenario", CHART_SCENARIOS)
def test_the_chart_passes_kube_score(findings: dict[str, list[Finding]], scenario: str) -> None:
    assert unexplained(findings[scenario], load_ignore_list()) == []


def test_the_rendered_gateways_pass_kube_score(
    findings: dict[str, list[Finding]], gateway_objects: list[dict[str, Any]]
) -> None:
    deployments = {d["metadata"]["name"]: d for d in gateway_objects if d["kind"] == "Deployment"}
    # The scenario must hold what the checks are about: a shared pool of several replicas
    # and a Dedicated gateway (which has its budget and anti-affinity already).
    assert deployments["tiergate-shared"]["spec"]["replicas"] > 1
    assert "tiergate-enterprise-acme" in deployments
    assert unexplained(findings[GATEWAYS], load_ignore_list()) == []


def test_every_gateway_of_several_replicas_has_a_budget_and_spreads(
    gateway_objects: list[dict[str, Any]],
) -> None:
    # kube-score checks the budget and the anti-affinity, not the topology spread.
    budgets = {d["metadata"]["name"] for d in gateway_objects if d["kind"] == "PodDisruptionBudget"}
    for deployment in (d for d in gateway_objects if d["kind"] == "Deployment"):
        name = deployment["metadata"]["name"]
        if deployment["spec"].get("replicas", 2) < 2:
            continue
        assert name in budgets, name
        pod = deployment["spec"]["template"]["spec"]
        keys = {c["topologyKey"] for c in pod.get("topologySpreadConstraints", [])}
        assert {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= keys, (name, keys)


def test_every_ignore_entry_is_explained_and_still_needed(
    findings: dict[str, list[Finding]],
) -> None:
    every = [f for scenario in findings.values() for f in scenario]
    scenarios = {*CHART_SCENARIOS, GATEWAYS}
    for rule in load_ignore_list():
        assert len(rule.why.split()) >= 10, f"{rule.check}: say why it is ignored"
        assert rule.scenarios is None or set(rule.scenarios) <= scenarios, rule.scenarios
        assert any(rule.matches(f) for f in every), f"stale ignore entry: {rule}"


def test_kube_score_is_the_pinned_build(tools: Tools) -> None:
    result = subprocess.run(
        [str(tools.kube_score), "version"], capture_output=True, text=True, timeout=30
    )
    assert result.stdout.startswith(
        f"kube-score version: {TOOLS_VERSIONS['KUBE_SCORE_VERSION']},"
    ), result.stdout
