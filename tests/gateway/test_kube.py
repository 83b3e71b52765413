"""Config straight from the Kubernetes API: one watched ConfigMap.

On the real local control plane: successive updates each serve within a second of
``kubectl apply`` returning (small inline configs and gzip configs whose watch event is
larger than aiohttp's 512 KiB line limit), and a broken config leaves the last good one
serving. Against a scripted API server on 127.0.0.1: the watch resumes from the last
resourceVersion (events and bookmarks) without listing again, lists again only on 410
Gone, and reads event lines split across chunks or sharing one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import pytest

from tests.support.fake_kube_api import FakeApi, cm_object, line, recorder
from tests.support.gateway import STARTUP_KEY, GatewayThread, config, route, target, tier
from tests.support.kube import apply_crds
from tiergate_contract import (
    GatewayConfig,
    canonical_json,
    configmap_payload,
    hash_client_key,
)
from tiergate_gateway.settings import Settings
from tiergate_gateway.sources import KubeAccess, KubeSource

# The requirement: a new config serves within a second of the write. Measured by
# bench/gateway/configmap_latency.py (a few ms after `kubectl apply` returns, ~0.15 s for a
# 900 KB gzip config on the 2-core machine). Here the bound only catches a config served by
# a relist or a reconnect instead of the watch event (seconds), with room for a loaded
# machine: speed is the benchmark's to prove, not a timed test's.
SERVED_WITHIN = 5.0


def configmap(namespace: str, cfg: GatewayConfig | bytes) -> str:
    """A ConfigMap manifest named ``gw``: inline bytes as given, a config as the operator writes it."""
    payload = (
        {"data": {"config.json": cfg.decode()}}
        if isinstance(cfg, bytes)
        else configmap_payload(cfg)
    )
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "gw", "namespace": namespace},
            **payload,
        }
    )


def generation(client: httpx.Client, gw: GatewayThread) -> str | None:
    resp = client.get(gw.url + "/readyz")
    return resp.json().get("generation") if resp.status_code == 200 else None


def wait_generation(client: httpx.Client, gw: GatewayThread, wanted: str, timeout: float) -> float:
    """Seconds until ``wanted`` serves; fails after ``timeout``."""
    started = time.monotonic()
    while generation(client, gw) != wanted:
        assert time.monotonic() - started < timeout, (
            f"generation {wanted} not served within {timeout}s"
        )
        time.sleep(0.005)
    return time.monotonic() - started


def start_gateway(control_plane: Any, namespace: str, tmp_path: Any) -> GatewayThread:
    apply_crds(control_plane)  # a gateway on the API reports its spend there
    settings = Settings(
        port=0,
        configmap=f"{namespace}/gw",
        kubeconfig=control_plane.kubeconfig,
        credentials_dir=tmp_path,
    )
    return GatewayThread(settings).start()


def watch_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("tiergate_gateway.sources") and r.levelno >= logging.WARNING
    ]


@pytest.mark.cluster
def test_watches_one_configmap(control_plane, namespace, upstreams, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    a, b = upstreams["a"], upstreams["b"]
    tiers = [tier("t", STARTUP_KEY, ["m"])]
    first = config([route("m", target("a", a.base_url))], tiers)
    control_plane.kubectl("apply", "-f", "-", input=configmap(namespace, canonical_json(first)))
    gw = start_gateway(control_plane, namespace, tmp_path)
    client = httpx.Client()
    try:
        wait_generation(client, gw, first.generation, 10)
        # Successive updates, each timed from the moment `kubectl apply` returns (the write
        # is done by then): every one serves within the bound, not just on average.
        latencies = []
        for i in range(6):
            upstream = b if i % 2 == 0 else a
            cfg = config(
                [route("m", target(upstream.name, upstream.base_url, weight=50 + i))], tiers
            )
            control_plane.kubectl(
                "apply", "-f", "-", input=configmap(namespace, canonical_json(cfg))
            )
            latencies.append(wait_generation(client, gw, cfg.generation, SERVED_WITHIN))
        assert max(latencies) < SERVED_WITHIN, latencies
        reply = client.post(
            gw.url + "/v1/chat/completions",
            json={"model": "m", "messages": []},
            headers={"authorization": f"Bearer {STARTUP_KEY}"},
        )
        assert reply.json()["choices"][0]["message"]["content"] == "hello from a"
        assert watch_failures(caplog) == []

        # A broken config is refused and the last good one keeps serving.
        serving = generation(client, gw)
        broken = canonical_json(cfg).replace(b"gateway-config/v1", b"gateway-config/v7")
        control_plane.kubectl("apply", "-f", "-", input=configmap(namespace, broken))
        deadline = time.monotonic() + 5
        while (
            "tiergate_gateway_config_rejected_total 1.0" not in client.get(gw.url + "/metrics").text
        ):
            assert time.monotonic() < deadline, "the broken ConfigMap was not refused"
            time.sleep(0.01)
        assert generation(client, gw) == serving
        # ... and the next good one serves as promptly as ever.
        fixed = config([route("m", target("b", b.base_url))], tiers)
        control_plane.kubectl("apply", "-f", "-", input=configmap(namespace, canonical_json(fixed)))
        wait_generation(client, gw, fixed.generation, SERVED_WITHIN)
    finally:
        client.close()
        gw.stop()


def large_config(upstream: str, round_: int) -> GatewayConfig:
    """~900 KB of JSON that gzip cannot shrink much (key digests): a ~870 KB watch event."""
    tiers = [
        tier(f"t{t}", f"sk-large-{t}-0123456789", ["m"]).model_copy(
            update={
                "key_sha256": tuple(
                    hash_client_key(f"sk-large-{t}-{k}-{round_}") for k in range(190)
                )
            }
        )
        for t in range(90)
    ]
    return config([route("m", target("a", upstream))], tiers)


@pytest.mark.cluster
def test_large_configmap_serves_promptly(control_plane, namespace, upstreams, tmp_path, caplog):
    """A gzip config near the ConfigMap size cap: its watch event is one ~870 KB line."""
    caplog.set_level(logging.INFO)
    upstream = upstreams["a"].base_url
    first = large_config(upstream, 0)
    assert "binaryData" in configmap_payload(first)
    apply = ("apply", "--server-side", "--field-manager=test", "-f", "-")
    control_plane.kubectl(*apply, input=configmap(namespace, first))
    gw = start_gateway(control_plane, namespace, tmp_path)
    client = httpx.Client()
    try:
        wait_generation(client, gw, first.generation, 10)
        latencies = []
        for i in range(1, 5):
            cfg = large_config(upstream, i)
            control_plane.kubectl(*apply, input=configmap(namespace, cfg))
            latencies.append(wait_generation(client, gw, cfg.generation, SERVED_WITHIN))
        assert max(latencies) < SERVED_WITHIN, latencies
        # Served by the watch itself, not by a relist after the watch broke.
        assert watch_failures(caplog) == []
    finally:
        client.close()
        gw.stop()


# --- against a scripted API server on 127.0.0.1 -------------------------------------------


async def test_watch_resumes_from_last_version_and_relists_only_on_gone():
    big = line("MODIFIED", cm_object(13, "B", padding=2 * 1024 * 1024))  # > aiohttp's readline cap
    lists = [
        {
            "kind": "ConfigMapList",
            "metadata": {"resourceVersion": "10"},
            "items": [cm_object(9, "A")],
        },
        {
            "kind": "ConfigMapList",
            "metadata": {"resourceVersion": "30"},
            "items": [cm_object(25, "D")],
        },
    ]
    watches: list[list[Any]] = [
        # Two events in one chunk, then one ~2 MiB event split across chunks; the server ends.
        [
            line("BOOKMARK", {"kind": "ConfigMap", "metadata": {"resourceVersion": "11"}})
            + line("MODIFIED", cm_object(12, "A")),  # same data: not offered again
            big[:1000],
            0.05,
            big[1000:],
        ],
        # Resumed at 13 (no list): a bookmark moves the version on, then the server ends again.
        [line("BOOKMARK", {"kind": "ConfigMap", "metadata": {"resourceVersion": "20"}})],
        # Resumed at 20: the version was compacted away.
        [line("ERROR", {"kind": "Status", "code": 410, "message": "too old resource version"})],
        # After listing again (version 30): the watch stays open.
        [line("MODIFIED", cm_object(31, "E")), None],
    ]
    offered, offer, done = recorder(b"E")

    async with FakeApi(lists, watches) as api:
        source = KubeSource("ns/gw", offer, lambda: KubeAccess(api.url, {}, False))
        await source.start()
        try:
            await asyncio.wait_for(done.wait(), 5)
        finally:
            await source.stop()
    assert offered == [b"A", b"B", b"D", b"E"]
    versions = [(r.get("watch") is not None, r.get("resourceVersion")) for r in api.requests]
    assert versions == [
        (False, None),
        (True, "10"),
        (True, "13"),
        (True, "20"),
        (False, None),
        (True, "30"),
    ]
    assert source.lists == 2


async def test_watch_gone_on_connect_and_errors_back_off_then_recover(caplog):
    caplog.set_level(logging.INFO)
    lists = [
        {
            "kind": "ConfigMapList",
            "metadata": {"resourceVersion": "5"},
            "items": [cm_object(5, "A")],
        },
        {
            "kind": "ConfigMapList",
            "metadata": {"resourceVersion": "8"},
            "items": [cm_object(7, "B")],
        },
    ]
    watches: list[list[Any]] = [
        [b"not json\n"],  # a broken stream: an error, retried after a short backoff
        [410],  # HTTP 410 on connect: list again
        [line("MODIFIED", cm_object(9, "C")), None],
    ]
    offered, offer, done = recorder(b"C")

    async with FakeApi(lists, watches) as api:
        source = KubeSource(
            "ns/gw", offer, lambda: KubeAccess(api.url, {}, False), backoff=(0.05, 0.2)
        )
        await source.start()
        try:
            await asyncio.wait_for(done.wait(), 5)
        finally:
            await source.stop()
    assert offered == [b"A", b"B", b"C"]
    assert [r.get("resourceVersion") for r in api.requests] == [None, "5", "5", None, "8"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "retrying in" in warnings[0], warnings
