"""The steps of ``dev up``: control plane, CRDs, mock upstreams, operator, examples, gateways.

Every process started is recorded in ``DevState`` at once, so ``dev down`` can stop
exactly those (also after a failed ``dev up``). Gateways run as local processes fed
from the API (ConfigMap watch) under the gateways' own ServiceAccount, with their
upstream credentials copied from the Secrets their Deployment mounts.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tiergate_cli.devstate import DevState
from tiergate_cli.manifests import ManifestSet
from tiergate_cli.targets import local_upstream_ports
from tiergate_devkit.checkout import crds_dir
from tiergate_devkit.cluster import ControlPlane, start, tools_bin_dir
from tiergate_devkit.processes import ProcessRecord, spawn, wait_for_http
from tiergate_operator.desired import DesiredState
from tiergate_operator.registry import CRD_KINDS, CUSTOM_KINDS, DEPLOYMENT, SECRET
from tiergate_operator.settings import OperatorSettings

__all__ = ["DevUp"]


def _clean_env() -> dict[str, str]:
    """This environment without tiergate's or kubectl's variables (flags say what they need)."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_") and k != "KUBECONFIG"
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DevUp:
    state: DevState
    manifests: ManifestSet
    desired: DesiredState
    settings: OperatorSettings
    progress: Callable[[str], None]
    crds_dir: Path = field(default_factory=crds_dir)

    def control_plane(self) -> ControlPlane:
        self.progress(
            "locating the control-plane binaries (a cold build takes ~25 min: `make tools`)"
        )
        try:
            bin_dir = tools_bin_dir(build=True)
        except (subprocess.CalledProcessError, FileNotFoundError) as error:
            raise RuntimeError(
                f"the control-plane binaries are missing and could not be built ({error}); "
                "run `make tools` (needs Go) or set TIERGATE_TOOLS_BIN"
            ) from None
        self.progress("starting etcd, kube-apiserver, controller-manager, scheduler and kwok")
        self.state.cluster_started = True
        self.state.save()
        return start(self.state.cluster_dir, bin_dir, progress=lambda m: self.progress(f"  {m}"))

    def install_crds(self, plane: ControlPlane) -> None:
        self.progress("installing the CRDs")
        files = [
            arg for kind in CRD_KINDS for arg in ("-f", str(self.crds_dir / f"{kind.plural}.yaml"))
        ]
        plane.kubectl("apply", "--server-side", "--force-conflicts", *files)
        for kind in CRD_KINDS:
            plane.kubectl(
                "wait", "--for=condition=Established", f"crd/{kind.resource}", "--timeout=30s"
            )

    def mock_upstreams(self) -> None:
        listen = {
            name: port
            for config in self.desired.configs.values()
            for name, port in local_upstream_ports(config).items()
        }
        if not listen:
            return
        self.progress(
            f"starting mock upstreams on {', '.join(f'{n}:{p}' for n, p in sorted(listen.items()))}"
        )
        argv = [
            sys.executable,
            "-m",
            "tiergate_cli.mock_upstream",
            *(f"--listen={name}={port}" for name, port in sorted(listen.items())),
        ]
        record = spawn("mock-upstreams", argv, _clean_env(), self.state.logs / "mock-upstreams.log")
        self._record(record)
        self.state.upstreams = listen
        for port in listen.values():
            wait_for_http(f"http://127.0.0.1:{port}/admin/stats", record, timeout=15)

    def operator(self, plane: ControlPlane) -> None:
        self.progress(f"starting the operator (log {self.state.logs / 'operator.log'})")
        env = plane.env() | {"TIERGATE_STANDALONE": "1", "PYTHONUNBUFFERED": "1"}
        self._record(
            spawn(
                "operator",
                [sys.executable, "-m", "tiergate_operator"],
                env,
                self.state.logs / "operator.log",
            )
        )

    def apply_manifests(self, plane: ControlPlane) -> None:
        namespace = self.state.namespace
        self.progress(
            f"applying {len(self.manifests.documents)} example manifests in namespace {namespace}"
        )
        plane.kubectl("create", "namespace", namespace, check=False)
        items = [doc.body for _, doc in self.manifests.documents]
        plane.kubectl(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        )

    def wait_ready(self, plane: ControlPlane, timeout: float = 90) -> None:
        namespace = self.state.namespace
        self.progress(
            f"waiting for the operator: gateways {', '.join(sorted(self.desired.configs))} "
            "and every route and tier Ready"
        )
        deadline = time.monotonic() + timeout
        for kind in (k.resource for k in CUSTOM_KINDS):
            # kubectl wait fails at once when there is nothing to wait for yet: retry until then.
            while True:
                left = max(1, int(deadline - time.monotonic()))
                result = plane.kubectl(
                    "wait",
                    "-n",
                    namespace,
                    "--for=condition=Ready",
                    kind,
                    "--all",
                    f"--timeout={left}s",
                    check=False,
                    timeout=left + 10,
                )
                if result.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{kind} in {namespace} not Ready within {timeout:.0f} s: "
                        f"{result.stderr.strip()} (operator log: {self.state.logs / 'operator.log'})"
                    )
                time.sleep(0.5)

    def gateways(self, plane: ControlPlane) -> None:
        kubeconfig = self._gateway_kubeconfig(plane)
        self.state.credentials.mkdir(mode=0o700, parents=True, exist_ok=True)
        started = []
        for gateway in sorted(self.desired.configs):
            credentials = self.state.credentials / gateway
            self._copy_mounted_secrets(plane, gateway, credentials)
            port = _free_port()
            argv = [
                sys.executable,
                "-m",
                "tiergate_gateway",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--configmap",
                f"{self.state.namespace}/{gateway}",
                "--kubeconfig",
                str(kubeconfig),
                "--credentials-dir",
                str(credentials),
                "--grace-seconds",
                "2",
            ]
            log = self.state.logs / f"gateway-{gateway}.log"
            self.progress(
                f"starting gateway {gateway} on 127.0.0.1:{port}, config from the API (log {log})"
            )
            record = spawn(f"gateway-{gateway}", argv, _clean_env(), log)
            self._record(record)
            self.state.gateways[gateway] = port
            self.state.save()
            started.append((record, port))
        for record, port in started:
            wait_for_http(f"http://127.0.0.1:{port}/readyz", record, timeout=30)

    def _gateway_kubeconfig(self, plane: ControlPlane) -> Path:
        """A kubeconfig with a token of the gateways' ServiceAccount: the access a pod would have."""
        account = self.settings.gateway_service_account
        token = plane.kubectl(
            "create", "token", account, "-n", self.state.namespace, "--duration=24h"
        ).stdout.strip()
        return plane.write_kubeconfig(self.state.root / "gateway.kubeconfig", token)

    def _copy_mounted_secrets(self, plane: ControlPlane, gateway: str, folder: Path) -> None:
        """Write the Secrets the gateway's Deployment mounts as ``<folder>/<secret>/<key>``."""
        deployment = _get(plane, self.state.namespace, DEPLOYMENT.resource, gateway)
        volumes = deployment["spec"]["template"]["spec"].get("volumes", [])
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for volume in volumes:
            name = (volume.get("secret") or {}).get("secretName")
            if not name:
                continue
            secret = _get(plane, self.state.namespace, SECRET.resource, name)
            (folder / name).mkdir(mode=0o700, exist_ok=True)
            for key, value in (secret.get("data") or {}).items():
                path = folder / name / key
                path.touch(mode=0o600)
                path.write_bytes(base64.b64decode(value))

    def _record(self, record: ProcessRecord) -> None:
        self.state.processes.append(record)
        self.state.save()


def _get(plane: ControlPlane, namespace: str, kind: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        plane.kubectl("get", "-n", namespace, kind, name, "-o", "json").stdout
    )
    return result
