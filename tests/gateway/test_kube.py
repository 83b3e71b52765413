"""Config straight from the Kubernetes API: one watched ConfigMap on the real local control plane."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tiergate_gateway.contract import canonical_json
from tiergate_gateway.settings import Settings

from .helpers import STARTUP_KEY, GatewayThread, config, route, target, tier

pytestmark = pytest.mark.cluster


def configmap(namespace: str, data: bytes) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "gw", "namespace": namespace},
            "data": {"config.json": data.decode()},
        }
    )


def generation(gw: GatewayThread) -> str | None:
    resp = httpx.get(gw.url + "/readyz")
    return resp.json().get("generation") if resp.status_code == 200 else None


def wait_generation(gw: GatewayThread, wanted: str, timeout: float) -> float:
    started = time.monotonic()
    while generation(gw) != wanted:
        assert time.monotonic() - started < timeout, (
            f"generation {wanted} not served within {timeout}s"
        )
        time.sleep(0.01)
    return time.monotonic() - started


def test_watches_one_configmap(control_plane, namespace, upstreams, tmp_path):
    a, b = upstreams["a"], upstreams["b"]
    tiers = [tier("t", STARTUP_KEY, ["m"])]
    first = config([route("m", target("a", a.base_url))], tiers)
    control_plane.kubectl("apply", "-f", "-", input=configmap(namespace, canonical_json(first)))
    settings = Settings(
        port=0,
        configmap=f"{namespace}/gw",
        kubeconfig=control_plane.kubeconfig,
        credentials_dir=tmp_path,
    )
    gw = GatewayThread(settings).start()
    try:
        wait_generation(gw, first.generation, 10)
        second = config([route("m", target("b", b.base_url))], tiers)
        control_plane.kubectl(
            "apply", "-f", "-", input=configmap(namespace, canonical_json(second))
        )
        assert wait_generation(gw, second.generation, 1.5) < 1.5  # kubectl returns after the write
        reply = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "m", "messages": []},
            headers={"authorization": f"Bearer {STARTUP_KEY}"},
        )
        assert reply.json()["choices"][0]["message"]["content"] == "hello from b"
        broken = canonical_json(second).replace(b"gateway-config/v1", b"gateway-config/v7")
        control_plane.kubectl("apply", "-f", "-", input=configmap(namespace, broken))
        deadline = time.monotonic() + 5
        while (
            "tiergate_gateway_config_rejected_total 1.0" not in httpx.get(gw.url + "/metrics").text
        ):
            assert time.monotonic() < deadline, "the broken ConfigMap was not refused"
            time.sleep(0.02)
        assert generation(gw) == second.generation
    finally:
        gw.stop()
