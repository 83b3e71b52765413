"""Operator restarts: a restart writes nothing; a hard kill mid-reconcile converges."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.support.kube import (
    CHILD_KINDS,
    CUSTOM_RESOURCES,
    EXAMPLE_OBJECTS,
    apply_crds,
    apply_examples,
    eventually,
    resource_versions,
    wait_ready,
)
from tests.support.operator_process import running_operator
from tiergate_devkit.cluster import ControlPlane

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def crds(control_plane: ControlPlane) -> None:
    apply_crds(control_plane)


def test_restart_and_reapply_cause_no_writes(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """GitOps: re-applying the same manifests, or restarting the operator, writes nothing."""
    apply_examples(control_plane, namespace)
    with running_operator(control_plane, tmp_path / "first.log"):
        wait_ready(
            control_plane,
            namespace,
            *EXAMPLE_OBJECTS,
        )
        time.sleep(2)  # let the last status and Deployment updates settle
    kinds = f"{CHILD_KINDS},{CUSTOM_RESOURCES}"
    settled = resource_versions(control_plane, namespace, kinds)

    apply_examples(control_plane, namespace)
    with running_operator(control_plane, tmp_path / "second.log"):
        # A second operator process lists everything and reconciles: it must find nothing to do.
        eventually(
            lambda: "reconciler started" in (tmp_path / "second.log").read_text(), timeout=30
        )
        time.sleep(5)
    assert resource_versions(control_plane, namespace, kinds) == settled
    assert f"namespace {namespace}: applying" not in (tmp_path / "second.log").read_text()


def test_killed_mid_reconcile_converges_without_duplicates(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    log = tmp_path / "killed.log"
    with running_operator(control_plane, log) as process:
        apply_examples(control_plane, namespace)
        eventually(lambda: f"namespace {namespace}: applying" in log.read_text(), timeout=30)
        process.send_signal(signal.SIGKILL)
        process.wait()
    with running_operator(control_plane, tmp_path / "restarted.log"):
        wait_ready(control_plane, namespace, "apikeytier/startup", "apikeytier/enterprise-acme")
    names = sorted(resource_versions(control_plane, namespace, CHILD_KINDS))
    assert names == sorted(
        {
            "ConfigMap/kube-root-ca.crt",
            "ConfigMap/tiergate-shared",
            "ConfigMap/tiergate-enterprise-acme",
            "Deployment/tiergate-shared",
            "Deployment/tiergate-enterprise-acme",
            "Service/tiergate-shared",
            "Service/tiergate-enterprise-acme",
            "PodDisruptionBudget/tiergate-enterprise-acme",
            "PodDisruptionBudget/tiergate-shared",
        }
    )
    replicasets = json.loads(
        control_plane.kubectl("-n", namespace, "get", "replicasets", "-o", "json").stdout
    )
    assert len(replicasets["items"]) == 2, "a pod template changed during convergence"
