"""``tiergate render`` prints exactly what the operator applies on a real control plane."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.kube import EXAMPLES, get
from tiergate_devkit.cluster import ControlPlane
from tiergate_operator.drift import holds

from .conftest import Result

pytestmark = pytest.mark.cluster

MANAGED_KINDS = (
    "configmaps,deployments,services,poddisruptionbudgets,horizontalpodautoscalers,"
    "serviceaccounts,roles,rolebindings"
)


def test_render_equals_what_the_operator_applies(
    control_plane: ControlPlane, namespace: str, operator_log: Path, tiergate: Callable[..., Result]
) -> None:
    control_plane.kubectl("-n", namespace, "apply", "-k", str(EXAMPLES))
    control_plane.kubectl(
        "-n",
        namespace,
        "wait",
        "--for=condition=Ready",
        "modelroutes,apikeytiers",
        "--all",
        "--timeout=90s",
        timeout=100,
    )
    result = tiergate("render", "-f", str(EXAMPLES), "-n", namespace, "-o", "json")
    assert result.code == 0, result.err
    text = result.out
    for tier in ("startup", "enterprise-acme"):  # offline, uids are placeholders
        text = text.replace(
            f"<uid of ApiKeyTier/{tier}>",
            get(control_plane, namespace, "apikeytier", tier)["metadata"]["uid"],
        )
    rendered = json.loads(text)["items"]

    live = json.loads(
        control_plane.kubectl(
            "-n",
            namespace,
            "get",
            MANAGED_KINDS,
            "-l",
            "app.kubernetes.io/managed-by=tiergate-operator",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert sorted((m["kind"], m["metadata"]["name"]) for m in rendered) == sorted(
        (m["kind"], m["metadata"]["name"]) for m in live
    )
    by_key = {(m["kind"], m["metadata"]["name"]): m for m in live}
    for manifest in rendered:
        applied = by_key[(manifest["kind"], manifest["metadata"]["name"])]
        if manifest["kind"] == "ConfigMap":
            assert applied["data"] == manifest["data"]  # the gateway config, byte for byte
        if manifest["kind"] == "Deployment":
            assert holds(applied["spec"], manifest["spec"]), manifest["metadata"]["name"]
        # Everything render prints is in the live object (the server only adds defaults).
        assert holds(applied, manifest), f"{manifest['kind']}/{manifest['metadata']['name']}"
