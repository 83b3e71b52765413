"""The project's helm is stamped like a release build (scripts/build-tools.sh, helm's Makefile
LDFLAGS): it reports the pinned version, and its default Kubernetes version is the one of the
client-go it is built with, not the unstamped v1.20.0, so `helm template charts/tiergate`
works without --kube-version."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.tools import TOOLS_VERSIONS, Tools
from tests.support.chart import CHART

pytestmark = pytest.mark.cluster


def helm(tools: Tools, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools.helm), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_helm_reports_the_pinned_version(tools: Tools) -> None:
    result = helm(tools, "version", "--template", "{{.Version}} {{.GitTreeState}}")
    assert result.stdout == f"v{TOOLS_VERSIONS['HELM_VERSION']} clean", result.stdout


def test_helm_assumes_a_current_kubernetes_by_default(tools: Tools, tmp_path: Path) -> None:
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.0.0\n")
    (chart / "templates" / "v.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n"
        'data: {version: "{{ .Capabilities.KubeVersion.Version }}"}\n'
    )
    result = helm(tools, "template", "probe", str(chart))
    assert result.returncode == 0, result.stderr
    version = yaml.safe_load(result.stdout)["data"]["version"]
    match = re.fullmatch(r"v1\.(\d+)\.0", version)
    assert match, version
    # helm's default is the minor of its client-go, which the pinned helm release keeps
    # within Kubernetes' version skew of the control plane the project pins.
    pinned_minor = int(TOOLS_VERSIONS["K8S_VERSION"].split(".")[1])
    assert pinned_minor - 3 <= int(match[1]) <= pinned_minor, version


def test_helm_template_of_the_chart_needs_no_kube_version(tools: Tools) -> None:
    kube_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    assert kube_version  # the constraint this test is about
    result = helm(tools, "template", "t", str(CHART))
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(result.stdout) if d}
    assert {"Deployment", "ClusterRole", "CustomResourceDefinition"} <= kinds, kinds
    lint = helm(tools, "lint", str(CHART), "--strict")
    assert "1 chart(s) linted, 0 chart(s) failed" in lint.stdout, lint.stdout + lint.stderr
