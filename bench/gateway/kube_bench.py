"""Start-up shared by the benchmarks that run gateway processes against the local control plane
(``configmap_latency.py``, ``ledger_loss.py``): this checkout's packages on the import path
(imported first, before any ``tiergate_*`` module), the ledger's CRDs, free ports, a
``--configmap`` gateway.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# This checkout's packages, for the benchmark and (PYTHONPATH) for the gateways it starts.
PACKAGES = [str(ROOT / name) for name in ("contract", "gateway_image", "operator", "devkit")]
sys.path[:0] = PACKAGES


def apply_ledger_crds(plane: Any) -> None:
    """The CRDs a ``--configmap`` gateway watches besides its ConfigMap (the spend ledger):
    without them its ledger watches fail (404) and log it."""
    plane.kubectl(
        "apply",
        "--server-side",
        "-f",
        str(ROOT / "crds" / "apikeytiers.yaml"),
        "-f",
        str(ROOT / "crds" / "spendreports.yaml"),
    )
    plane.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/spendreports.tiergate.dev",
        "crd/apikeytiers.tiergate.dev",
        "--timeout=60s",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_process(
    kubeconfig: Path,
    configmap: str,
    port: int,
    log: IO[bytes],
    *flags: str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``tiergate-gateway --configmap NAMESPACE/NAME`` on 127.0.0.1:``port``, its output in
    ``log``; ``flags`` are added to the command line, ``env`` to the environment."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tiergate_gateway",
            "--port",
            str(port),
            "--configmap",
            configmap,
            "--kubeconfig",
            str(kubeconfig),
            *flags,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(PACKAGES), **(env or {})),
    )
