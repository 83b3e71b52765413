"""Fixtures for the Helm chart tests: releases of charts/tiergate on the real control plane.

``installed_chart(control_plane, namespace)`` installs the chart (CRDs applied from crds/
beforehand, as every control-plane test does, so the release does not own them) and yields
``InstalledChart(release, namespace, service_account)``; it is a tuple, so
``release, namespace, service_account = installed_chart`` works. The operator Deployment is
Available on the kwok node when the fixture returns; uninstall runs afterwards (and removes
the release's ClusterRole and ClusterRoleBinding). Mint a token of the operator's identity
with::

    token = control_plane.kubectl("-n", namespace, "create", "token", service_account).stdout.strip()
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "sa.kubeconfig", token)

The release runs one replica, so a local operator under that token must run with
TIERGATE_STANDALONE=1 (the ClusterRole grants kopf.dev peering only when replicaCount > 1).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart.tools import Tools
from tests.support.chart import CHART, InstalledChart, fullname, install, release_name, uninstall
from tests.support.kube import apply_crds
from tiergate_devkit.cluster import ControlPlane, tools_bin_dir


@pytest.fixture(scope="session")
def tiergate_crds(control_plane: ControlPlane) -> None:
    """The real tiergate.dev CRDs, shared by the session (applied like every other test does)."""
    apply_crds(control_plane)


@pytest.fixture
def installed_chart(
    control_plane: ControlPlane, namespace: str, tiergate_crds: None
) -> Iterator[InstalledChart]:
    """The chart installed (one replica, CRDs not owned) with the operator Deployment Available."""
    release = release_name()
    install(control_plane, release, namespace, "crds.enabled=false")
    control_plane.kubectl(
        "-n",
        namespace,
        "wait",
        f"deployment/{fullname(release)}",
        "--for=condition=Available",
        "--timeout=90s",
    )
    yield InstalledChart(release, namespace, fullname(release))
    uninstall(control_plane, release, namespace)


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    """A private copy of the chart that a test may edit (e.g. to change a CRD)."""
    copy = tmp_path / "tiergate"
    shutil.copytree(CHART, copy)
    return copy


@pytest.fixture(scope="session")
def tools() -> Tools:
    """helm and kube-score from scripts/build-tools.sh (never built here, like the cluster's)."""
    found = Tools(tools_bin_dir())
    missing = [p.name for p in (found.helm, found.kube_score) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing in {found.bin_dir}: run `make tools` first")
    return found
