"""Helpers for the chart tests: helm releases on the real control plane."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any, NamedTuple

from tiergate_devkit.cluster import ControlPlane

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tiergate"
KUBE_VERSION = "1.37.2"  # the control plane's version; `helm template` needs it (kubeVersion)


class InstalledChart(NamedTuple):
    release: str
    namespace: str
    service_account: str


def release_name() -> str:
    """Unique per test: cluster-scoped objects (ClusterRole, ...) are named after it."""
    return f"tg{uuid.uuid4().hex[:8]}"


def fullname(release: str) -> str:
    return f"{release}-tiergate"


def install(
    plane: ControlPlane,
    release: str,
    namespace: str,
    *values: str,
    chart: Path = CHART,
    wait: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``helm install`` with ``--set``-style ``values`` (``key=value``)."""
    args = ["install", release, str(chart), "-n", namespace]
    for value in values:
        args += ["--set", value]
    if wait:
        args += ["--wait", "--timeout", "90s"]
    return plane.helm(*args)


def uninstall(plane: ControlPlane, release: str, namespace: str, timeout: int = 60) -> None:
    result = plane.helm(
        "uninstall", release, "-n", namespace, "--wait", "--timeout", f"{timeout}s",
        check=False, timeout=timeout + 30,
    )  # fmt: skip
    if result.returncode != 0 and "not found" not in result.stderr:
        raise AssertionError(f"helm uninstall {release} failed: {result.stderr}")


def template(
    plane: ControlPlane, *args: str, chart: Path = CHART, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``helm template`` (no cluster access) at the control plane's Kubernetes version."""
    return plane.helm(
        "template", "t", str(chart), "--kube-version", KUBE_VERSION, *args, check=check
    )


def get_json(plane: ControlPlane, *args: str) -> Any:
    return json.loads(plane.kubectl("get", *args, "-o", "json").stdout)


def exists(plane: ControlPlane, *args: str) -> bool:
    result = plane.kubectl("get", *args, "-o", "name", check=False)
    if result.returncode != 0 and "NotFound" not in result.stderr:
        raise AssertionError(f"kubectl get {' '.join(args)}: {result.stderr}")
    return result.returncode == 0
