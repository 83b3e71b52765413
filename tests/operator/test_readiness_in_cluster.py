"""The real operator's readiness probe (TIERGATE_READINESS) on the local control plane."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import free_port
from tests.support.kube import EXAMPLE_OBJECTS, apply_crds, apply_examples, eventually, wait_ready
from tests.support.operator_process import running_operator
from tiergate_devkit.cluster import ControlPlane

pytestmark = pytest.mark.cluster

PEERING_CRD = Path(__file__).parents[2] / "charts/tiergate/crds/clusterkopfpeerings.kopf.dev.yaml"

Answer = tuple[int, dict[str, Any]] | None  # None: the connection was refused


def probe(url: str) -> Answer:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read())
    except (ConnectionError, urllib.error.URLError):
        return None


def test_readiness_waits_for_the_watches_then_stays_ready_and_frees_its_port(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/readyz"
    log = tmp_path / "operator.log"
    crds_were_there = (
        control_plane.kubectl("get", "crd", "modelroutes.tiergate.dev", check=False).returncode == 0
    )
    answers: list[Answer] = []

    def answered(*statuses: int) -> bool:
        answers.append(probe(url))
        return answers[-1] is not None and answers[-1][0] in statuses

    with running_operator(control_plane, log, extra_env={"TIERGATE_READINESS": url}) as process:
        eventually(lambda: answered(200, 503), timeout=60, interval=0.05, what=f"{url}; {log}")
        if not crds_were_there:
            # Without its CRDs the operator cannot serve: 503, saying what it waits for.
            time.sleep(2)
            answered(200, 503)
            for answer in answers[-2:]:
                assert answer is not None
                assert answer[0] == 503, answer
                assert (
                    "CustomResourceDefinition modelroutes.tiergate.dev to be Established"
                    in (answer[1]["waiting_for"])
                )
        apply_crds(control_plane)
        apply_examples(control_plane, namespace)
        wait_ready(
            control_plane,
            namespace,
            *EXAMPLE_OBJECTS,
        )
        eventually(lambda: answered(200), timeout=30, what=f"{url} ready; {log}")
        assert answers[-1] == (200, {"ready": True})
        # Before it: refused (not listening yet), or 503 with what it waits for; never flapping.
        first_ready = answers.index(answers[-1])
        for answer in answers[:first_ready]:
            assert answer is None or (answer[0] == 503 and answer[1]["waiting_for"]), answer
        assert process.poll() is None
        assert probe(url) == (200, {"ready": True})

    # Stopped: nothing answers, and the port can be bound again.
    assert probe(url) is None
    with socket.socket() as sock:  # as a restarted operator would (connections in TIME_WAIT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_a_busy_readiness_port_refuses_to_start(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        log = tmp_path / "operator.log"
        url = f"http://127.0.0.1:{port}/readyz"
        with running_operator(control_plane, log, extra_env={"TIERGATE_READINESS": url}) as process:
            deadline = time.monotonic() + 60
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert process.poll() is not None, "the operator kept running on a busy port"
        assert f"cannot listen on 127.0.0.1:{port}" in log.read_text()


def test_a_bad_readiness_setting_refuses_to_start(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    with running_operator(
        control_plane, log, extra_env={"TIERGATE_READINESS": "https://0.0.0.0:8081/readyz"}
    ) as process:
        assert process.wait(timeout=60) != 0
    text = log.read_text()
    assert "refusing to start: TIERGATE_READINESS='https://0.0.0.0:8081/readyz'" in text
    assert "Traceback" not in text


def test_a_standby_replica_reports_ready(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """Two replicas in one ClusterKopfPeering: the one of lower priority stands by, Ready."""
    apply_crds(control_plane)
    control_plane.kubectl("apply", "-f", str(PEERING_CRD))
    control_plane.kubectl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev")
    peering = f"readiness-{namespace}"
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "ClusterKopfPeering",
                "metadata": {"name": peering},
            }
        ),
    )
    urls = {role: f"http://127.0.0.1:{free_port()}/readyz" for role in ("active", "standby")}

    def replica(role: str, priority: int) -> dict[str, str]:
        return {
            "TIERGATE_STANDALONE": "0",
            "TIERGATE_PEERING": peering,
            "TIERGATE_PEERING_PRIORITY": str(priority),
            "TIERGATE_READINESS": urls[role],
        }

    logs = {role: tmp_path / f"{role}.log" for role in urls}
    try:
        with running_operator(control_plane, logs["active"], extra_env=replica("active", 100)):
            eventually(
                lambda: probe(urls["active"]) == (200, {"ready": True}),
                timeout=60,
                what=f"the active replica ready; {logs['active']}",
            )
            with running_operator(control_plane, logs["standby"], extra_env=replica("standby", 10)):
                eventually(
                    lambda: probe(urls["standby"]) == (200, {"ready": True}),
                    timeout=60,
                    what=f"the standby replica ready; {logs['standby']}",
                )
                apply_examples(control_plane, namespace)
                wait_ready(control_plane, namespace, "apikeytier/startup")
        standby_log = logs["standby"].read_text()
        assert "Resuming operations" not in standby_log  # it stood by throughout
        assert "reconciler stopped after 0 passes" in standby_log
    finally:
        control_plane.kubectl("delete", "clusterkopfpeering", peering, check=False)
