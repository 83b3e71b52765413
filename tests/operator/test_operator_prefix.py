"""The operator under a non-default ``TIERGATE_PREFIX`` (as the chart allows), on the real control plane."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import (
    apply_crds,
    apply_examples,
    eventually,
    get,
    get_or_none,
    wait_ready,
)
from tests.support.operator_process import running_operator
from tiergate_contract import CONFIG_KEY, GatewayConfig, config_from_configmap
from tiergate_devkit.cluster import ControlPlane
from tiergate_operator.names import SHARED_GATEWAY, dedicated_gateway
from tiergate_operator.registry import DEFAULT_PREFIX, PrefixedKeys

pytestmark = pytest.mark.cluster

PREFIX = "acme.example"
KEYS = PrefixedKeys(PREFIX)
SHARED, DEDICATED = SHARED_GATEWAY, dedicated_gateway("enterprise-acme")
OBJECTS = ("modelroute/deepseek-chat", "apikeytier/startup", "apikeytier/enterprise-acme")


def _keys_under(prefix: str, body: dict[str, Any]) -> set[str]:
    """The label and annotation keys of ``body`` under ``prefix``."""
    metadata = body["metadata"]
    keys = {*(metadata.get("labels") or {}), *(metadata.get("annotations") or {})}
    return {key for key in keys if key.startswith(f"{prefix}/")}


def _config(plane: ControlPlane, namespace: str, gateway: str) -> GatewayConfig:
    configmap = get(plane, namespace, "configmap", gateway)
    return GatewayConfig.model_validate_json(config_from_configmap(configmap) or b"")


def _assert_children_carry_the_prefix(plane: ControlPlane, namespace: str) -> None:
    for gateway, isolation in ((SHARED, "Shared"), (DEDICATED, "Dedicated")):
        configmap = get(plane, namespace, "configmap", gateway)
        assert configmap["metadata"]["labels"][KEYS.gateway_label] == gateway
        assert configmap["metadata"]["labels"][KEYS.isolation_label] == isolation
        generation = configmap["metadata"]["annotations"][KEYS.config_generation_annotation]
        assert generation == _config(plane, namespace, gateway).generation
        deployment = get(plane, namespace, "deployment", gateway)
        assert deployment["spec"]["selector"]["matchLabels"][KEYS.gateway_label] == gateway
        assert deployment["spec"]["template"]["metadata"]["labels"][KEYS.gateway_label] == gateway
        service = get(plane, namespace, "service", gateway)
        assert service["spec"]["selector"][KEYS.gateway_label] == gateway
        for child in (configmap, deployment, service):
            assert _keys_under(PREFIX, child), child["kind"]
            assert not _keys_under(DEFAULT_PREFIX, child), child["kind"]


def _status_gateways(plane: ControlPlane, namespace: str) -> list[str]:
    """The Gateways table of ``tiergate status`` under the prefix, one line per gateway."""
    result = subprocess.run(
        [sys.executable, "-m", "tiergate_cli", "status", "-n", namespace, "--prefix", PREFIX],
        capture_output=True,
        text=True,
        env=plane.env(),
        timeout=60,
        check=True,
    )
    return result.stdout.split("Gateways\n", 1)[1].splitlines()[1:]


def test_routes_and_tiers_become_ready_and_children_are_repaired_under_another_prefix(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    apply_crds(control_plane)
    log = tmp_path / "operator.log"
    with running_operator(control_plane, log, extra_env={"TIERGATE_PREFIX": PREFIX}):
        apply_examples(control_plane, namespace)
        wait_ready(control_plane, namespace, *OBJECTS, timeout=60)
        _assert_children_carry_the_prefix(control_plane, namespace)

        rows = _status_gateways(control_plane, namespace)
        for gateway, isolation in ((SHARED, "Shared"), (DEDICATED, "Dedicated")):
            generation = _config(control_plane, namespace, gateway).generation
            (row,) = [r.split() for r in rows if r.split()[1:2] == [gateway]]
            assert (row[2], row[4]) == (isolation, generation), row

        # Drift: a deleted Service, a scaled Deployment and a clobbered config come back.
        control_plane.kubectl("-n", namespace, "delete", "service", DEDICATED)
        control_plane.kubectl("-n", namespace, "scale", "deployment", DEDICATED, "--replicas=1")
        clobber = {"data": {CONFIG_KEY: "{}"}}
        control_plane.kubectl(
            "-n",
            namespace,
            "patch",
            "configmap",
            DEDICATED,
            "--type=merge",
            "-p",
            json.dumps(clobber),
        )
        eventually(
            lambda: get_or_none(control_plane, namespace, "service", DEDICATED),
            what="the deleted Service comes back",
        )
        eventually(
            lambda: get(control_plane, namespace, "deployment", DEDICATED)["spec"]["replicas"] == 3,
            what="the replica count is restored",
        )
        eventually(
            lambda: _config(control_plane, namespace, DEDICATED).tiers,
            what="the config is restored",
        )
        wait_ready(control_plane, namespace, *OBJECTS, timeout=60)
        _assert_children_carry_the_prefix(control_plane, namespace)
    assert "Traceback" not in log.read_text(), "the operator logged a traceback"
