"""Scale benchmark of the operator on the real local control plane (prints a table).

    .venv/bin/python bench/operator/scale.py [--routes 1000] [--shared 90] [--dedicated 10]

1. Applies N ModelRoutes and M ApiKeyTiers (with key Secrets) at once while the operator
   runs, and measures the time until every gateway config holds every route and every
   status is Ready, the operator's API writes and its peak RSS.
2. Restarts the operator on the converged state (a full resync) and counts its writes.
3. The floor: the same final objects (children and statuses), written by a tight client
   loop with the same concurrency, into a fresh namespace.
Goals (issue 3): convergence within 2x the floor, 0 writes on a no-op resync, RSS <= 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from tiergate_contract import GatewayConfig, config_from_configmap
from tiergate_devkit.cluster import ControlPlane, start, stop, tools_bin_dir
from tiergate_operator.kube import KubeApi, load_client_configuration
from tiergate_operator.refs import ObjectRef
from tiergate_operator.registry import (
    API_KEY_TIER,
    CHILD_KINDS,
    CONFIG_MAP,
    CUSTOM_KINDS,
    MANAGED_BY,
    MODEL_ROUTE,
    label_selector,
    resources,
)

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "scale"


def manifests(routes: int, shared: int, dedicated: int) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "upstream"},
            "stringData": {"key": "fake-upstream-credential"},
        }
    ]
    for i in range(routes):
        docs.append(
            {
                **MODEL_ROUTE.type_meta(),
                "metadata": {"name": f"model-{i:04d}"},
                "spec": {
                    "model": f"model-{i:04d}",
                    "targets": [
                        {
                            "name": "primary",
                            "baseURL": "http://127.0.0.1:9901/v1",
                            "upstreamModel": f"m{i}",
                            "weight": 80,
                            "credentialsSecretRef": {"name": "upstream", "key": "key"},
                            "pricing": {"inputPerMillion": "0.25", "outputPerMillion": "0.25"},
                        },
                        {
                            "name": "fallback",
                            "baseURL": "http://127.0.0.1:9903/v1",
                            "upstreamModel": f"m{i}",
                            "priority": 1,
                        },
                    ],
                },
            }
        )
    tiers = [(f"shared-{i:03d}", "Shared") for i in range(shared)]
    tiers += [(f"dedicated-{i:02d}", "Dedicated") for i in range(dedicated)]
    for name, isolation in tiers:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{name}-keys"},
                "stringData": {"key": f"tg-{name}-fake-key"},
            }
        )
        spec: dict[str, Any] = {
            "isolation": isolation,
            "keys": [{"secretRef": {"name": f"{name}-keys"}}],
            "limits": {"requestsPerMinute": 600},
        }
        if isolation == "Dedicated":
            spec["replicas"] = 2
        docs.append(
            {
                **API_KEY_TIER.type_meta(),
                "metadata": {"name": name},
                "spec": spec,
            }
        )
    return docs


class RssSampler(threading.Thread):
    """Peak RSS and CPU seconds of a process, sampled until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process, self.peak, self.cpu, self.running = psutil.Process(pid), 0, 0.0, True

    def run(self) -> None:
        while self.running:
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
                times = self.process.cpu_times()
                self.cpu = times.user + times.system
            except psutil.Error:
                return
            time.sleep(0.05)


def start_operator(plane: ControlPlane, log: Path) -> subprocess.Popen[bytes]:
    env = plane.env() | {"TIERGATE_STANDALONE": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "tiergate_operator"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def stop_operator(process: subprocess.Popen[bytes], log: Path) -> dict[str, int]:
    process.terminate()
    process.wait(timeout=60)
    found = re.findall(r"API writes by verb: (\{.*\})", log.read_text())
    if not found:
        raise SystemExit(f"the operator did not report its writes; see {log}")
    return json.loads(found[-1])  # type: ignore[no-any-return]


def converged(plane: ControlPlane, routes: int, tiers: int, gateways: int) -> bool:
    objs = json.loads(
        plane.kubectl(
            "-n",
            NAMESPACE,
            "get",
            resources(CONFIG_MAP, *CUSTOM_KINDS),
            "-o",
            "json",
            timeout=60,
        ).stdout
    )["items"]
    configs = [
        payload
        for o in objs
        if o["kind"] == "ConfigMap" and (payload := config_from_configmap(o)) is not None
    ]
    if len(configs) != gateways:
        return False
    for configmap in configs:
        if len(GatewayConfig.model_validate_json(configmap).routes) != routes:
            return False
    crs = [o for o in objs if o["kind"] in ("ModelRoute", "ApiKeyTier")]
    if len(crs) != routes + tiers:
        return False
    return all(
        any(
            c["type"] == "Ready"
            and c["status"] == "True"
            and c.get("observedGeneration") == o["metadata"]["generation"]
            for c in (o.get("status") or {}).get("conditions", [])
        )
        for o in crs
    )


async def floor_loop(
    plane: ControlPlane,
    namespace: str,
    children: list[dict[str, Any]],
    statuses: list[tuple[str, str, dict[str, Any]]],
) -> tuple[float, int]:
    """Write the converged objects into ``namespace`` with a tight SSA loop."""
    kube = KubeApi(load_client_configuration())
    limit = asyncio.Semaphore(16)

    async def bounded(call: Any) -> None:
        async with limit:
            await call

    began = time.perf_counter()
    await asyncio.gather(*(bounded(kube.apply(c)) for c in children if c["kind"] == "ConfigMap"))
    await asyncio.gather(*(bounded(kube.apply(c)) for c in children if c["kind"] != "ConfigMap"))
    await asyncio.gather(
        *(
            bounded(kube.patch_status(ObjectRef(kind, namespace, name), status))
            for kind, name, status in statuses
        )
    )
    elapsed = time.perf_counter() - began
    writes = sum(kube.writes.values())
    await kube.close()
    return elapsed, writes


def strip_for_floor(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    metadata = {k: v for k, v in obj["metadata"].items() if k in ("name", "labels", "annotations")}
    metadata["namespace"] = namespace
    body = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    if obj["kind"] == "Service":  # the cluster IP is allocated per Service, not copied
        body["spec"] = {
            k: v for k, v in body["spec"].items() if k not in ("clusterIP", "clusterIPs")
        }
    return body | {"metadata": metadata}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--shared", type=int, default=90)
    parser.add_argument("--dedicated", type=int, default=10)
    args = parser.parse_args()
    tiers = args.shared + args.dedicated
    workdir = Path(tempfile.mkdtemp(prefix="tiergate-scale-"))
    print(f"starting the control plane in {workdir} ...", file=sys.stderr)
    plane = start(workdir, tools_bin_dir(build=True))
    try:
        run(plane, workdir, args.routes, args.shared, args.dedicated, tiers)
    finally:
        stop(workdir)


def run(
    plane: ControlPlane, workdir: Path, routes: int, shared: int, dedicated: int, tiers: int
) -> None:
    import os

    os.environ["KUBECONFIG"] = str(plane.kubeconfig)
    plane.kubectl("apply", "--server-side", "-k", str(REPO / "crds"))
    plane.kubectl(
        "wait",
        "--for=condition=Established",
        *(f"crd/{kind.resource}" for kind in CUSTOM_KINDS),
        "--timeout=30s",
    )
    for ns in (NAMESPACE, "floor"):
        plane.kubectl("create", "namespace", ns)
    bundle = workdir / "bundle.json"
    bundle.write_text(
        json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": manifests(routes, shared, dedicated)}
        )
    )

    log = workdir / "operator.log"
    operator = start_operator(plane, log)
    sampler = RssSampler(operator.pid)
    sampler.start()
    time.sleep(3)  # the operator's initial (empty) listing
    print(f"applying {routes} routes and {tiers} tiers ...", file=sys.stderr)
    began = time.perf_counter()
    plane.kubectl("-n", NAMESPACE, "apply", "--server-side", "-f", str(bundle), timeout=600)
    applied = time.perf_counter() - began
    while not converged(plane, routes, tiers, (1 if shared else 0) + dedicated):
        time.sleep(0.5)
        if time.perf_counter() - began > 900:
            raise SystemExit("no convergence within 15 minutes")
    convergence = time.perf_counter() - began
    time.sleep(2)
    sampler.running = False
    writes = stop_operator(operator, log)
    peak_rss = sampler.peak

    log2 = workdir / "operator-resync.log"
    resync = start_operator(plane, log2)
    resync_sampler = RssSampler(resync.pid)
    resync_sampler.start()
    deadline = time.time() + 120
    while "reconciler started" not in log2.read_text() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(10)  # the full relist and a reconcile pass of every namespace
    resync_sampler.running = False
    resync_writes = stop_operator(resync, log2)

    objs = json.loads(
        plane.kubectl(
            "-n",
            NAMESPACE,
            "get",
            resources(*CHILD_KINDS),
            "-l",
            label_selector(MANAGED_BY),
            "-o",
            "json",
        ).stdout
    )["items"]
    children = [strip_for_floor(o, "floor") for o in objs]
    crs = json.loads(
        plane.kubectl("-n", NAMESPACE, "get", resources(*CUSTOM_KINDS), "-o", "json").stdout
    )["items"]
    plane.kubectl(
        "-n",
        "floor",
        "apply",
        "--server-side",
        "-f",
        "-",
        timeout=600,
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [strip_for_floor(o, "floor") for o in crs],
            }
        ),
    )
    statuses = [(o["kind"], o["metadata"]["name"], o["status"]) for o in crs]
    floor_seconds, floor_writes = asyncio.run(floor_loop(plane, "floor", children, statuses))

    total_writes = sum(writes.values())
    rows = [
        (
            "objects",
            f"{routes} ModelRoutes, {tiers} ApiKeyTiers ({shared} Shared, {dedicated} Dedicated)",
        ),
        ("kubectl apply of all inputs", f"{applied:.1f} s"),
        ("operator: time to converge", f"{convergence:.1f} s (from the start of the apply)"),
        ("operator: API writes", f"{total_writes} {writes}"),
        ("operator: peak RSS", f"{peak_rss / 2**20:.0f} MB"),
        ("operator: CPU time until converged", f"{sampler.cpu:.1f} s"),
        ("floor: tight SSA loop, same objects", f"{floor_seconds:.1f} s, {floor_writes} writes"),
        (
            "convergence / (apply + floor)",
            f"{convergence / (applied + floor_seconds):.2f}x (goal <= 2x)",
        ),
        ("no-op resync: API writes", f"{sum(resync_writes.values())} {resync_writes} (goal 0)"),
        ("no-op resync: peak RSS", f"{resync_sampler.peak / 2**20:.0f} MB"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
