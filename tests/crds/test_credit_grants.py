"""Credit grants are append-only: the API server refuses removing or changing one (a CEL
transition rule), and accepts a top-up (a new grant)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tiergate_devkit.cluster import ControlPlane

CRDS = Path(__file__).parents[2] / "crds"
GRANTS_APPEND_ONLY = (
    "credits.grants is append-only: a grant once applied can be neither removed nor changed "
    "(top up with a new grant under a new id)"
)
WELCOME = {"id": "welcome", "amountUSD": "100", "reason": "the seed's free credits"}
TOPUP = {"id": "topup-1", "amountUSD": "20", "reason": "invoice 1"}


def _tier(name: str, grants: list[dict[str, str]] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"isolation": "Shared", "keys": [{"secretRef": {"name": "k"}}]}
    if grants is not None:
        spec["credits"] = {"grants": grants, "warnBelowUSD": "10"}
    return {
        "apiVersion": "tiergate.dev/v1alpha1",
        "kind": "ApiKeyTier",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def grants_namespace(control_plane: ControlPlane) -> str:
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(CRDS))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/apikeytiers.tiergate.dev"
    )
    name = f"grants-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    return name


def _apply(plane: ControlPlane, namespace: str, body: dict[str, Any]) -> tuple[int, str]:
    result = plane.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-", input=json.dumps(body), check=False
    )
    return result.returncode, result.stderr


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("case", "grants"),
    [
        ("removed", [TOPUP]),
        ("amount-changed", [{**WELCOME, "amountUSD": "1000"}, TOPUP]),
        ("reason-changed", [{**WELCOME, "reason": "edited"}, TOPUP]),
        ("all-removed", []),
        ("credits-removed", None),
    ],
)
def test_a_grant_cannot_be_removed_or_changed(
    control_plane: ControlPlane, grants_namespace: str, case: str, grants: Any
) -> None:
    name = f"grants-{case}"
    assert _apply(control_plane, grants_namespace, _tier(name, [WELCOME])) == (0, "")
    assert _apply(control_plane, grants_namespace, _tier(name, [WELCOME, TOPUP]))[0] == 0
    code, stderr = _apply(control_plane, grants_namespace, _tier(name, grants))
    assert code != 0, f"{case} was accepted"
    assert f"spec.credits.grants: Forbidden: {GRANTS_APPEND_ONLY}" in stderr
    stored = json.loads(
        control_plane.kubectl(
            "-n", grants_namespace, "get", "apikeytier", name, "-o", "json"
        ).stdout
    )
    assert stored["spec"]["credits"]["grants"] == [WELCOME, TOPUP]


@pytest.mark.cluster
def test_a_tier_without_credits_may_add_them(
    control_plane: ControlPlane, grants_namespace: str
) -> None:
    assert _apply(control_plane, grants_namespace, _tier("grants-later", None))[0] == 0
    assert _apply(control_plane, grants_namespace, _tier("grants-later", [WELCOME]))[0] == 0
