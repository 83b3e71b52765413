"""The gateways' Redis URL comes from a Secret in their namespace, by reference only."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.support.kube import apply_crds, apply_examples, condition, get, wait_ready
from tests.support.operator_process import running_operator
from tiergate_devkit.cluster import ControlPlane
from tiergate_operator.registry import CHILD_KINDS, CUSTOM_KINDS, EVENT, resources

pytestmark = pytest.mark.cluster

PASSWORD = "hunter2-not-a-real-password"
REDIS_URL = f"redis://:{PASSWORD}@127.0.0.1:6379/0"


def test_gateways_read_the_redis_url_from_a_secret_and_say_when_it_is_missing(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    apply_crds(control_plane)
    log = tmp_path / "operator.log"
    settings = {"TIERGATE_REDIS_SECRET_NAME": "tiergate-redis"}
    with running_operator(control_plane, log, extra_env=settings):
        apply_examples(control_plane, namespace)
        objects = ["modelroute/deepseek-chat", "apikeytier/startup", "apikeytier/enterprise-acme"]
        # Without the Secret: every tier and route of the namespace says so, with a Warning event.
        control_plane.kubectl(
            "-n",
            namespace,
            "wait",
            "--for=condition=Stalled",
            *objects,
            "--timeout=60s",
            timeout=70,
        )
        for kind, name in (o.split("/") for o in objects):
            ready = condition(get(control_plane, namespace, kind, name), "Ready")
            assert (ready["status"], ready["reason"]) == ("False", "MissingSecret"), name
            assert "Secret tiergate-redis" in ready["message"] and "Redis URL" in ready["message"]
        events = control_plane.kubectl(
            "-n",
            namespace,
            "get",
            "events",
            "--field-selector",
            "reason=MissingSecret",
            "-o",
            "json",
        ).stdout
        assert {e["involvedObject"]["name"] for e in json.loads(events)["items"]} == {
            "deepseek-chat",
            "startup",
            "enterprise-acme",
        }
        # The gateways are there, pointing at the Secret.
        for gateway in ("tiergate-shared", "tiergate-enterprise-acme"):
            container = get(control_plane, namespace, "deployment", gateway)["spec"]["template"][
                "spec"
            ]["containers"][0]
            assert {
                "name": "TIERGATE_GATEWAY_REDIS_URL",
                "valueFrom": {"secretKeyRef": {"name": "tiergate-redis", "key": "redis-url"}},
            } in container["env"]

        # The user creates the Secret (with a password in the URL): everything becomes Ready.
        control_plane.kubectl(
            "-n",
            namespace,
            "create",
            "secret",
            "generic",
            "tiergate-redis",
            f"--from-literal=redis-url={REDIS_URL}",
        )
        wait_ready(control_plane, namespace, *objects, timeout=60)
        # What the API server stores holds what the operator renders: no re-apply loop.
        time.sleep(2)
        writes = re.compile(rf"namespace {namespace}: applying [1-9]")
        before = len(writes.findall(log.read_text()))
        time.sleep(3)
        assert len(writes.findall(log.read_text())) == before

        # The URL is nowhere the operator writes or logs, and it wrote no Secret.
        written = control_plane.kubectl(
            "-n",
            namespace,
            "get",
            resources(*CHILD_KINDS, *CUSTOM_KINDS, EVENT),
            "-o",
            "json",
        ).stdout
        assert PASSWORD not in written
        secret = json.loads(
            control_plane.kubectl(
                "-n",
                namespace,
                "get",
                "secret",
                "tiergate-redis",
                "--show-managed-fields",
                "-o",
                "json",
            ).stdout
        )
        assert [f["manager"] for f in secret["metadata"]["managedFields"]] == ["kubectl-create"]
    assert PASSWORD not in log.read_text()
    assert "Traceback" not in log.read_text()
