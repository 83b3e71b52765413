"""Each bad manifest is rejected by a real API server with exactly the message in its header."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.support.invalid_manifests import InvalidManifest, invalid_manifests
from tiergate_devkit.cluster import ControlPlane

CRDS = Path(__file__).parents[2] / "crds"
CRD_NAMES = ("crd/modelroutes.tiergate.dev", "crd/apikeytiers.tiergate.dev")


@pytest.fixture(scope="module")
def crd_namespace(control_plane: ControlPlane) -> str:
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(CRDS))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *CRD_NAMES)
    name = f"invalid-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    return name


@pytest.mark.cluster
@pytest.mark.parametrize("manifest", invalid_manifests(), ids=lambda m: m.path.stem)
def test_api_server_rejects(
    control_plane: ControlPlane, crd_namespace: str, manifest: InvalidManifest
) -> None:
    result = control_plane.kubectl(
        "create", "-n", crd_namespace, "-f", "-", input=manifest.text, check=False
    )
    assert result.returncode != 0, f"{manifest.path.name} was accepted"
    assert manifest.server_message in result.stderr


@pytest.mark.cluster
def test_examples_are_accepted(control_plane: ControlPlane, crd_namespace: str) -> None:
    control_plane.kubectl(
        "apply", "-n", crd_namespace, "--dry-run=server", "-k", str(CRDS / "examples")
    )


@pytest.mark.cluster
def test_the_catalog_example_is_accepted(control_plane: ControlPlane, crd_namespace: str) -> None:
    control_plane.kubectl(
        "apply", "-n", crd_namespace, "--dry-run=server", "-k", str(CRDS / "examples-catalog")
    )
