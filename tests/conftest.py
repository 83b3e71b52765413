"""Shared fixtures: the real local control plane (session-wide) and per-test namespaces."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kube import apply_crds
from tests.support.operator_process import running_operator
from tiergate_devkit.cluster import ClusterStartError, ControlPlane, start, stop, tools_bin_dir


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver, controller-manager, scheduler and kwok on 127.0.0.1.

    Binaries come from scripts/build-tools.sh (``make tools``); they are never built here,
    so a missing toolchain fails loudly instead of stalling a test run for half an hour.
    """
    bin_dir = tools_bin_dir()
    if not (bin_dir / "kube-apiserver").exists():
        pytest.fail(f"control-plane binaries missing in {bin_dir}: run `make tools` first")
    workdir = Path(
        os.environ.get("TIERGATE_TEST_CLUSTER_DIR") or tmp_path_factory.mktemp("cluster")
    )
    try:
        plane = start(workdir, bin_dir)
    except ClusterStartError as error:
        pytest.fail(str(error))
    yield plane
    stop(workdir)


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace, deleted (without waiting) after the test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def operator_log(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The operator running against the control plane (CRDs applied) for a test module; its log.

    Fails the module's last test if the operator logged a traceback.
    """
    apply_crds(control_plane)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with running_operator(control_plane, log):
        yield log
    assert "Traceback" not in log.read_text(), "the operator logged a traceback"
