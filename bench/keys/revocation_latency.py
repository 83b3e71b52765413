"""Benchmark: how soon a revoked client key is refused by every gateway replica.

Not a test: a script that prints per-try latencies and their p50/max. Runs on 127.0.0.1
only, against the real local control plane.

    .venv/bin/python bench/keys/revocation_latency.py [--tries 20] [--replicas 3]
        [--interval 0.3] [--workdir DIR]

- the control plane: the one recorded in ``--workdir`` if it is running (``python -m
  tiergate_devkit.cluster start`` uses ``.tiergate/cluster``), else a fresh one in a
  temporary directory, stopped at the end
- the operator as a local process (``python -m tiergate_operator``), with the CRDs
- a Dedicated tier whose gateway runs as ``--replicas`` real ``tiergate-gateway`` processes,
  each watching the gateway's ConfigMap through the API
- three ways to revoke, ``--tries`` times each, each undone (and its key seen accepted
  again on every replica) before the next try:
  ``disable``: ``kubectl apply`` of the tier with the key Secret's reference ``disabled: true``;
  ``value``: ``kubectl patch`` removing the key's value from its Secret;
  ``reference``: ``kubectl apply`` of the tier without the Secret's reference
- latency = the last replica's first 401 - the kubectl command returned; each replica is
  polled with ``GET /v1/models`` (authenticated) over its own keep-alive connection
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

from tiergate_devkit.cluster import ControlPlane, start, stop, tools_bin_dir  # noqa: E402

DEFAULT_WORKDIR = ROOT / ".tiergate" / "cluster"
STEADY, REVOKED = "tg-bench-steady-key-0001", "tg-bench-revoked-key-0002"
TIER = "bench"
GATEWAY = f"tiergate-{TIER}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    """One gateway process and a keep-alive connection to it."""

    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port, self.process = port, process
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def status(self, key: str) -> int | None:
        try:
            self.conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})
            response = self.conn.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            return None


def wait_all(replicas: list[Replica], key: str, wanted: int, timeout: float = 30) -> float | None:
    """``time.monotonic()`` when every replica has answered ``wanted`` for ``key``."""
    pending = set(range(len(replicas)))
    deadline = time.monotonic() + timeout
    last = 0.0
    while pending and time.monotonic() < deadline:
        for index in list(pending):
            if replicas[index].status(key) == wanted:
                last = time.monotonic()
                pending.discard(index)
        time.sleep(0.002)
    return None if pending else last


def tier(disabled: bool = False, referenced: bool = True) -> dict[str, Any]:
    keys: list[dict[str, Any]] = [{"secretRef": {"name": "bench-steady"}}]
    if referenced:
        revocable: dict[str, Any] = {"secretRef": {"name": "bench-revocable"}}
        if disabled:
            revocable["disabled"] = True
        keys.append(revocable)
    return {
        "apiVersion": "tiergate.dev/v1alpha1",
        "kind": "ApiKeyTier",
        "metadata": {"name": TIER},
        "spec": {"isolation": "Dedicated", "replicas": 1, "keys": keys},
    }


def route() -> dict[str, Any]:
    target = {"name": "a", "baseURL": "http://127.0.0.1:9/v1", "upstreamModel": "up"}
    return {
        "apiVersion": "tiergate.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "chat"},
        "spec": {"model": "chat", "targets": [target]},
    }


def secret(name: str, **values: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": values}


class Scenario:
    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        self.plane, self.namespace = plane, namespace

    def apply(self, *bodies: dict[str, Any]) -> None:
        items = {"apiVersion": "v1", "kind": "List", "items": list(bodies)}
        self.plane.kubectl("-n", self.namespace, "apply", "-f", "-", input=json.dumps(items))

    def patch_secret(self, value: str | None) -> None:
        """Set or (``None``) remove the revocable key's value: a merge patch, as the Secret
        loses its ``data`` field altogether when its last value goes."""
        data = {"key": None if value is None else base64.b64encode(value.encode()).decode()}
        self.plane.kubectl(
            "-n", self.namespace, "patch", "secret", "bench-revocable", "--type=merge",
            "-p", json.dumps({"data": data}),
        )  # fmt: skip

    def revoke(self, how: str) -> None:
        if how == "disable":
            self.apply(tier(disabled=True))
        elif how == "value":
            self.patch_secret(None)
        else:
            self.apply(tier(referenced=False))

    def restore(self, how: str) -> None:
        if how == "value":
            self.patch_secret(REVOKED)
        else:
            self.apply(tier())


def measure(
    scenario: Scenario, replicas: list[Replica], how: str, tries: int, interval: float
) -> list[float]:
    latencies: list[float] = []
    print(f"\n== {how}")
    print(f"{'try':>4}  {'kubectl took':>12}  {'401 on every replica after it returned':>38}")
    for attempt in range(1, tries + 1):
        time.sleep(interval)
        began = time.monotonic()
        scenario.revoke(how)
        returned = time.monotonic()
        refused = wait_all(replicas, REVOKED, 401)
        if refused is None:
            print(f"{attempt:>4}  {returned - began:>11.3f}s  {'not within 30 s':>38}")
            latencies.append(float("inf"))
        else:
            latencies.append(refused - returned)
            print(f"{attempt:>4}  {returned - began:>11.3f}s  {refused - returned:>37.3f}s")
        # The steady key never stopped; put the revoked one back for the next try.
        assert all(r.status(STEADY) == 200 for r in replicas), "the steady key was refused"
        scenario.restore(how)
        if wait_all(replicas, REVOKED, 200) is None:
            raise SystemExit("the key was not accepted again within 30 s")
    print(
        f"{how}: p50 {statistics.median(latencies):.3f}s  max {max(latencies):.3f}s"
        f"  over {len(latencies)} tries"
    )
    return latencies


def start_operator(plane: ControlPlane, log: Path) -> subprocess.Popen[bytes]:
    env = plane.env() | {"TIERGATE_STANDALONE": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tiergate_operator"], env=env, stdout=out, stderr=out
        )


def start_replicas(plane: ControlPlane, namespace: str, count: int, logs: Path) -> list[Replica]:
    replicas = []
    for index in range(count):
        port = free_port()
        with (logs / f"gateway-{index}.log").open("ab") as out:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "tiergate_gateway", "--port", str(port),
                    "--configmap", f"{namespace}/{GATEWAY}",
                    "--kubeconfig", str(plane.kubeconfig), "--credentials-dir", str(logs),
                ],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        replicas.append(Replica(port, process))
    return replicas


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(30)
    if process.poll() is None:
        process.kill()
        process.wait()


def run(plane: ControlPlane, args: argparse.Namespace, scratch: Path) -> dict[str, list[float]]:
    namespace = f"bench-keys-{uuid.uuid4().hex[:8]}"
    plane.kubectl("create", "namespace", namespace)
    crds = [
        arg
        for name in ("modelroutes", "apikeytiers", "spendreports")
        for arg in ("-f", str(ROOT / "crds" / f"{name}.yaml"))
    ]
    plane.kubectl("apply", "--server-side", "--force-conflicts", *crds)
    operator = start_operator(plane, scratch / "operator.log")
    replicas: list[Replica] = []
    try:
        scenario = Scenario(plane, namespace)
        scenario.apply(
            secret("bench-steady", key=STEADY),
            secret("bench-revocable", key=REVOKED),
            route(),
            tier(),
        )
        deadline = time.monotonic() + 60
        get = ("-n", namespace, "get", "configmap", GATEWAY)
        while plane.kubectl(*get, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"no ConfigMap {GATEWAY} within 60 s; see {scratch}/operator.log")
            time.sleep(0.2)
        replicas = start_replicas(plane, namespace, args.replicas, scratch)
        if wait_all(replicas, REVOKED, 200, timeout=60) is None:
            raise SystemExit(f"the replicas never served the key; see {scratch}")
        return {
            how: measure(scenario, replicas, how, args.tries, args.interval)
            for how in ("disable", "value", "reference")
        }
    finally:
        for replica in replicas:
            stop_process(replica.process)
        stop_process(operator)
        plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.3, help="pause between tries")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    own: Path | None = None
    if (workdir / "state.json").exists() and ControlPlane.load(workdir).processes:
        plane = ControlPlane.load(workdir)
        print(f"using the control plane in {workdir}")
    else:
        own = Path(tempfile.mkdtemp(prefix="tiergate-keys-bench-"))
        print(f"starting a control plane in {own}")
        plane = start(own / "cluster", tools_bin_dir())
    scratch = Path(tempfile.mkdtemp(prefix="tiergate-keys-bench-logs-"))
    try:
        results = run(plane, args, scratch)
    finally:
        if own is not None:
            stop(own / "cluster")
    print(f"\n{args.replicas} gateway replicas, {args.tries} tries each; logs in {scratch}\n")
    print("| revocation | p50 | max |")
    print("| --- | ---: | ---: |")
    for how, latencies in results.items():
        print(f"| {how} | {statistics.median(latencies):.3f} s | {max(latencies):.3f} s |")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
