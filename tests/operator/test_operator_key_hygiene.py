"""Key hygiene on the real control plane: a key Secret value no client could send is no key.

A value with a trailing newline (what ``kubectl create secret --from-file`` gives) and a
blank one are left out of the gateway config; the tier keeps serving its good key, says
which Secret and data key are wrong (condition and Warning event) and never echoes a value.
A tier whose only key is blank is not Ready.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import apply_crds, apply_examples, condition, eventually, get, wait_ready
from tests.support.operator_process import running_operator
from tiergate_contract import GatewayConfig, config_from_configmap, hash_client_key
from tiergate_devkit.cluster import ControlPlane
from tiergate_operator.registry import CHILD_KINDS, CUSTOM_KINDS, EVENT, resources

pytestmark = pytest.mark.cluster

GOOD = "tg-web-good-key-0001"
FROM_FILE = "tg-web-from-file-key-0002"  # written to a file with its trailing newline
BAD_VALUES = (FROM_FILE, f"{FROM_FILE}\n")


def _tier(name: str, secret: str) -> str:
    return json.dumps(
        {
            "apiVersion": "tiergate.dev/v1alpha1",
            "kind": "ApiKeyTier",
            "metadata": {"name": name},
            "spec": {"isolation": "Shared", "keys": [{"secretRef": {"name": secret}}]},
        }
    )


def _shared_config(plane: ControlPlane, namespace: str) -> GatewayConfig:
    configmap = get(plane, namespace, "configmap", "tiergate-shared")
    return GatewayConfig.model_validate_json(config_from_configmap(configmap) or b"")


def _ready(plane: ControlPlane, namespace: str, tier: str) -> dict[str, Any] | None:
    body = get(plane, namespace, "apikeytier", tier)
    found = (body.get("status") or {}).get("conditions") or []
    return next((c for c in found if c["type"] == "Ready" and c["reason"] == "InvalidKey"), None)


def _warnings(plane: ControlPlane, namespace: str) -> dict[str, str]:
    listed = plane.kubectl(
        "-n", namespace, "get", "events", "--field-selector", "reason=InvalidKey", "-o", "json"
    ).stdout
    return {
        e["involvedObject"]["name"]: e["message"]
        for e in json.loads(listed)["items"]
        if e["type"] == "Warning"
    }


def test_bad_key_values_are_left_out_reported_and_never_echoed(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    apply_crds(control_plane)
    key_file = tmp_path / "key-file"
    key_file.write_text(f"{FROM_FILE}\n")
    log = tmp_path / "operator.log"
    with running_operator(control_plane, log):
        apply_examples(control_plane, namespace)
        kubectl = control_plane.kubectl
        kubectl(
            "-n", namespace, "create", "secret", "generic", "web-keys",
            f"--from-file=key-file={key_file}",
            f"--from-literal=key-good={GOOD}",
            "--from-literal=key-blank=",
        )  # fmt: skip
        kubectl("-n", namespace, "create", "secret", "generic", "blank-keys", "--from-literal=k=")
        kubectl("-n", namespace, "apply", "-f", "-", input=_tier("web", "web-keys"))
        kubectl("-n", namespace, "apply", "-f", "-", input=_tier("blank-only", "blank-keys"))

        # The tier with a good key among bad ones: served with the good key, and it says why not Ready.
        web = eventually(lambda: _ready(control_plane, namespace, "web"), what="web InvalidKey")
        assert web["status"] == "False"
        assert "Secret web-keys data key key-file ends with a newline" in web["message"]
        assert "Secret web-keys data key key-blank is empty" in web["message"]
        assert "the tier's other key keeps working" in web["message"]
        stalled = condition(get(control_plane, namespace, "apikeytier", "web"), "Stalled")
        assert (stalled["status"], stalled["reason"]) == ("True", "InvalidKey")
        config = eventually(
            lambda: (
                (c := _shared_config(control_plane, namespace))
                and any(t.name == "web" for t in c.tiers)
                and c
            ),
            what="web in the shared gateway's config",
        )
        keys = {tier.name: tier.key_sha256 for tier in config.tiers}
        assert keys["web"] == (hash_client_key(GOOD),)
        assert "blank-only" not in keys
        digests = {d for found in keys.values() for d in found}
        assert not digests & {hash_client_key(v) for v in (*BAD_VALUES, "")}

        # The tier whose only key is blank: not Ready, not in the config.
        blank = eventually(lambda: _ready(control_plane, namespace, "blank-only"), what="blank")
        assert blank["status"] == "False"
        assert "Secret blank-keys data key k is empty" in blank["message"]
        assert "the tier has no usable client key" in blank["message"]

        # A Warning event for each, naming the Secret, the data key and the problem.
        events = eventually(
            lambda: (
                (found := _warnings(control_plane, namespace)).keys() >= {"web", "blank-only"}
                and found
            ),
            what="InvalidKey Warning events",
        )
        assert "Secret web-keys data key key-file ends with a newline" in events["web"]
        assert "Secret blank-keys data key k is empty" in events["blank-only"]
        # The other tiers of the namespace are unaffected.
        wait_ready(control_plane, namespace, "apikeytier/startup", "apikeytier/enterprise-acme")

        # Fixing the value makes the tier Ready.
        fixed = kubectl(
            "-n", namespace, "create", "secret", "generic", "blank-keys",
            "--from-literal=k=tg-blank-fixed-0003", "--dry-run=client", "-o", "json",
        ).stdout  # fmt: skip
        kubectl("-n", namespace, "apply", "-f", "-", input=fixed)
        wait_ready(control_plane, namespace, "apikeytier/blank-only")

        written = kubectl(
            "-n", namespace, "get", resources(*CHILD_KINDS, *CUSTOM_KINDS, EVENT), "-o", "json"
        ).stdout
        assert FROM_FILE not in written
    text = log.read_text()
    assert FROM_FILE not in text
    assert GOOD not in text
    assert "Traceback" not in text
