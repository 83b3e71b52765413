"""Benchmark: how soon a gateway serves a new config after its ConfigMap is written.

Not a test: a script that prints per-update latencies and their p50/max. Runs on 127.0.0.1
only, against the real local control plane.

    .venv/bin/python bench/gateway/configmap_latency.py [--updates 10] [--sizes small,large]
        [--interval 0.3] [--workdir DIR]

- the control plane: the one recorded in ``--workdir`` if it is running (``python -m
  tiergate_devkit.cluster start`` uses ``.tiergate/cluster``), else a fresh one in a
  temporary directory, stopped at the end
- one ``tiergate-gateway --configmap ns/gw`` process per size, watching through the API
- each update: a new config written with ``kubectl apply --server-side`` (as the operator
  writes it: inline ``data``, or gzip ``binaryData`` when large), then ``/readyz`` polled
  every 2 ms over one keep-alive connection until it reports the new generation
- latency = served - ``kubectl apply`` returned (the write is done by then; negative when
  the gateway already served it while kubectl was still exiting); also from apply start
- sizes: ``small`` (one route, one tier: ~1 KB inline) and ``large`` (90 tiers x 190 key
  digests: a ~870 KB gzip ``binaryData`` ConfigMap, one ~870 KB watch event)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from kube_bench import ROOT, apply_ledger_crds, free_port, gateway_process  # first: the import path

from tiergate_contract import (
    GatewayConfig,
    Pricing,
    Route,
    Target,
    Tier,
    configmap_payload,
    hash_client_key,
    seal,
)
from tiergate_devkit.cluster import ControlPlane, start, stop, tools_bin_dir

DEFAULT_WORKDIR = ROOT / ".tiergate" / "cluster"


def make_config(size: str, round_: int) -> GatewayConfig:
    keys_per_tier, tiers = (1, 1) if size == "small" else (190, 90)
    route = Route(
        model="m",
        targets=(
            Target(
                name="a",
                base_url=f"http://127.0.0.1:{9000 + round_ % 100}/v1",
                upstream_model="a-model",
                weight=100,
                priority=0,
                pricing=Pricing(input_per_million=Decimal(1), output_per_million=Decimal(2)),
            ),
        ),
    )
    return seal(
        gateway="bench",
        namespace="bench",
        routes=[route],
        tiers=[
            Tier(
                name=f"t{t}",
                key_sha256=tuple(
                    hash_client_key(f"sk-bench-{t}-{k}-{round_}") for k in range(keys_per_tier)
                ),
                models=("m",),
            )
            for t in range(tiers)
        ],
    )


def manifest(namespace: str, cfg: GatewayConfig) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "gw", "namespace": namespace},
            **configmap_payload(cfg),
        }
    )


class Readyz:
    """``GET /readyz`` over one keep-alive connection; the generation served, or None."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def generation(self) -> str | None:
        try:
            self.conn.request("GET", "/readyz")
            resp = self.conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            return None
        if resp.status != 200:
            return None
        generation = json.loads(body).get("generation")
        return str(generation) if generation is not None else None

    def wait(self, wanted: str, timeout: float) -> float | None:
        """``time.monotonic()`` when ``wanted`` served, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.generation() == wanted:
                return time.monotonic()
            time.sleep(0.002)
        return None


def run_size(
    plane: ControlPlane, size: str, updates: int, interval: float, workdir: Path
) -> list[float]:
    namespace = f"bench-cm-{uuid.uuid4().hex[:8]}"
    plane.kubectl("create", "namespace", namespace)
    apply = ("apply", "--server-side", "--field-manager=bench", "-f", "-")
    first = make_config(size, 0)
    plane.kubectl(*apply, input=manifest(namespace, first))
    port = free_port()
    log = (workdir / f"gateway-{size}.log").open("wb")
    gateway = gateway_process(
        plane.kubeconfig, f"{namespace}/gw", port, log, "--credentials-dir", str(workdir)
    )
    latencies: list[float] = []
    try:
        readyz = Readyz(port)
        if readyz.wait(first.generation, 30) is None:
            raise SystemExit(f"the gateway never served its first config; see {log.name}")
        print(f"\n== {size}: {len(manifest(namespace, first)):,} bytes of ConfigMap")
        print(f"{'update':>6}  {'apply took':>10}  {'served after apply returned':>27}")
        for i in range(1, updates + 1):
            time.sleep(interval)
            cfg = make_config(size, i)
            began = time.monotonic()
            plane.kubectl(*apply, input=manifest(namespace, cfg))
            returned = time.monotonic()
            served = readyz.wait(cfg.generation, 30)
            if served is None:
                print(f"{i:>6}  {returned - began:>9.3f}s  {'not served within 30 s':>27}")
                latencies.append(float("inf"))
                continue
            latencies.append(served - returned)
            print(
                f"{i:>6}  {returned - began:>9.3f}s  {served - returned:>+26.3f}s"
                f"  ({served - began:.3f}s after apply began)"
            )
    finally:
        gateway.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            gateway.wait(30)
        log.close()
        plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    failures = [
        line
        for line in Path(log.name).read_text(errors="replace").splitlines()
        if "watching" in line and "failed" in line
    ]
    print(
        f"{size}: p50 {statistics.median(latencies):+.3f}s  max {max(latencies):+.3f}s"
        f"  over {len(latencies)} updates; watch failures logged: {len(failures)}"
    )
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.3, help="pause between updates")
    parser.add_argument("--sizes", default="small,large", help="comma-separated: small, large")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    if not sizes or any(s not in ("small", "large") for s in sizes):
        parser.error("--sizes takes small and/or large")

    workdir = args.workdir.resolve()
    own: Path | None = None
    if (workdir / "state.json").exists() and ControlPlane.load(workdir).processes:
        plane = ControlPlane.load(workdir)
        print(f"using the control plane in {workdir}")
    else:
        own = Path(tempfile.mkdtemp(prefix="tiergate-cm-bench-"))
        print(f"starting a control plane in {own}")
        plane = start(own / "cluster", tools_bin_dir())
    scratch = Path(tempfile.mkdtemp(prefix="tiergate-cm-bench-gw-"))
    try:
        apply_ledger_crds(plane)
        for size in sizes:
            run_size(plane, size, args.updates, args.interval, scratch)
    finally:
        if own is not None:
            stop(own / "cluster")
    print(f"\ngateway logs in {scratch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
