"""Benchmark: how much spend a SIGKILLed gateway loses from the durable ledger, and how soon a
settled call is on record.

Not a test: a script that prints a table. Runs on 127.0.0.1 only, against the real local
control plane (a fresh one in a temporary directory unless ``--workdir`` holds a running one).

    .venv/bin/python bench/gateway/ledger_loss.py [--rounds 8] [--rate 40]
        [--report-seconds 5] [--workdir DIR]

- one ``tiergate-gateway --configmap ns/gw`` process at a time, its upstream the benchmarks'
  mock (``mock_upstream.py``); a client sends plain chat completions at ``--rate`` per second
- kill rounds: the client runs for a random 2 to 2 + 2 x ``--report-seconds`` seconds, then
  the gateway is SIGKILLed; lost = calls answered 200 (each settled before its answer was
  sent) minus the calls its SpendReport holds
- record latency rounds: one call, then the report polled (every 20 ms) until it holds it
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
from kube_bench import HERE, apply_ledger_crds, free_port, gateway_process  # first: the import path

from tiergate_contract import (
    GatewayConfig,
    KeyName,
    Pricing,
    Route,
    Target,
    Tier,
    configmap_payload,
    hash_client_key,
    seal,
)
from tiergate_devkit.cluster import ControlPlane, start, stop, tools_bin_dir

KEY = "sk-bench-ledger-0001"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


def the_config(upstream_port: int) -> GatewayConfig:
    target = Target(
        name="a",
        base_url=f"http://127.0.0.1:{upstream_port}/v1",
        upstream_model="a-model",
        weight=100,
        priority=0,
        pricing=Pricing(input_per_million=Decimal(1), output_per_million=Decimal(2)),
    )
    tier = Tier(
        name="t",
        key_sha256=(hash_client_key(KEY),),
        key_names=(KeyName(sha256=hash_client_key(KEY), name="bench-keys/k"),),
        models=("m",),
    )
    return seal(
        gateway="bench",
        namespace="bench",
        routes=[Route(model="m", targets=(target,))],
        tiers=[tier],
    )


def reported_calls(plane: ControlPlane, namespace: str, pod: str) -> int:
    out = plane.kubectl("-n", namespace, "get", "spendreports", "-o", "json").stdout
    total = 0
    for item in json.loads(out)["items"]:
        if item["spec"]["pod"] != pod:
            continue
        for tier in item["spec"].get("tiers") or []:
            total += sum(month["calls"] for month in tier["months"])
    return total


def start_gateway(
    plane: ControlPlane, namespace: str, pod: str, args: argparse.Namespace, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = gateway_process(
        plane.kubeconfig,
        f"{namespace}/gw",
        port,
        log.open("ab"),
        "--credentials-dir",
        str(log.parent),
        "--spend-report-seconds",
        str(args.report_seconds),
        "--access-log-sample",
        "0",
        env={"POD_NAME": pod},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc, port
        time.sleep(0.05)
    raise SystemExit(f"the gateway did not start; see {log}")


def kill_round(
    plane: ControlPlane, namespace: str, pod: str, args: argparse.Namespace, log: Path
) -> tuple[int, int, float]:
    proc, port = start_gateway(plane, namespace, pod, args, log)
    answered = 0
    began = time.monotonic()
    stop_at = began + random.uniform(2, 2 + 2 * args.report_seconds)
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {KEY}"}
    ) as client:
        pause = 1 / args.rate
        while time.monotonic() < stop_at:
            if client.post("/v1/chat/completions", json=BODY).status_code == 200:
                answered += 1
            time.sleep(pause)
    rate = answered / (time.monotonic() - began)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return answered, reported_calls(plane, namespace, pod), rate


def latency_rounds(
    plane: ControlPlane, namespace: str, args: argparse.Namespace, log: Path
) -> list[float]:
    pod = "bench-latency"
    proc, port = start_gateway(plane, namespace, pod, args, log)
    found: list[float] = []
    try:
        for i in range(1, args.latency_calls + 1):
            time.sleep(random.uniform(0, args.report_seconds))
            reply = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json=BODY,
                headers={"authorization": f"Bearer {KEY}"},
            )
            assert reply.status_code == 200, reply.text
            answered = time.monotonic()
            while reported_calls(plane, namespace, pod) < i:
                time.sleep(0.02)
            found.append(time.monotonic() - answered)
    finally:
        proc.terminate()
        proc.wait(30)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--report-seconds", type=float, default=5.0)
    parser.add_argument("--latency-calls", type=int, default=10)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tiergate-ledger-bench-"))
    workdir = args.workdir or folder / "cluster"
    plane = start(workdir, tools_bin_dir())
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "mock_upstream.py"), str(upstream_port := free_port())]
    )
    namespace = f"bench-ledger-{uuid.uuid4().hex[:6]}"
    try:
        apply_ledger_crds(plane)
        plane.kubectl("create", "namespace", namespace)
        manifest = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "gw", "namespace": namespace},
            **configmap_payload(the_config(upstream_port)),
        }
        plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        log = folder / "gateway.log"
        print(
            f"report interval {args.report_seconds:g} s, {args.rate:g} calls/s, SIGKILL at a random moment"
        )
        print(
            f"{'round':>5}  {'answered':>8}  {'on record':>9}  {'lost':>4}  {'lost (s of traffic)':>19}"
        )
        losses, lost_seconds = [], []
        for i in range(1, args.rounds + 1):
            answered, recorded, rate = kill_round(plane, namespace, f"bench-kill-{i}", args, log)
            losses.append(answered - recorded)
            lost_seconds.append((answered - recorded) / rate)
            print(
                f"{i:>5}  {answered:>8}  {recorded:>9}  {answered - recorded:>4}  {lost_seconds[-1]:>18.2f}s"
            )
        print(
            f"lost: max {max(losses)} calls, at most {max(lost_seconds):.2f} s of traffic (the calls"
            f" answered at the rate reached); mean {statistics.mean(losses):.1f} calls;"
            f" never negative: {min(losses) >= 0}"
        )
        found = latency_rounds(plane, namespace, args, log)
        print(
            f"\na settled call on record after: p50 {statistics.median(found):.2f} s, max {max(found):.2f} s ({len(found)} calls)"
        )
    finally:
        upstream.terminate()
        upstream.wait(10)
        plane.kubectl("get", "spendreports", "-n", namespace, "-o", "name", check=False)
        for name in plane.kubectl(
            "-n", namespace, "get", "spendreports", "-o", "name", check=False
        ).stdout.split():
            plane.kubectl(
                "-n",
                namespace,
                "patch",
                name,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )
        if args.workdir is None:
            stop(workdir)


if __name__ == "__main__":
    main()
