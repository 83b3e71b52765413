"""A real local Kubernetes control plane: etcd, kube-apiserver, controller-manager,
scheduler and kwok (one fake node), each a process on 127.0.0.1.

``start()`` brings it up and waits until the node is Ready; ``stop()`` ends only
the processes it started, by the PIDs and command lines it recorded in ``state.json``.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tiergate_cli.kubectl import kubectl_binary
from tiergate_devkit.cluster.pki import (
    Identity,
    make_pki,
    write_kubeconfig,
    write_token_file,
)
from tiergate_devkit.processes import (
    ProcessRecord,
    Started,
    record_from_json,
    start_process,
    stop_process,
)

__all__ = ["ClusterStartError", "ControlPlane", "start", "stop"]

FAKE_NODE = "kwok-node-0"
OPERATOR_USER = "operator"
_CONTROLLERS = ",".join(
    [
        "garbage-collector-controller",
        "deployment-controller",
        "replicaset-controller",
        "namespace-controller",
        "serviceaccount-controller",
        "serviceaccount-token-controller",
        "root-ca-certificate-publisher-controller",
        "clusterrole-aggregation-controller",
        "node-lifecycle-controller",
        "disruption-controller",
    ]
)
_FAKE_NODE_MANIFEST = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": FAKE_NODE,
        "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        "labels": {
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": FAKE_NODE,
            "type": "kwok",
        },
    },
    "spec": {"providerID": f"kwok://{FAKE_NODE}"},
}


class ClusterStartError(RuntimeError):
    """A component failed to start; the message carries the tail of its log."""


class CommandFailed(subprocess.CalledProcessError):
    """A kubectl or helm call failed; unlike its base, ``str()`` shows what it printed."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}\nstdout: {self.stdout}"


@dataclass
class ControlPlane:
    workdir: Path
    bin_dir: Path
    api_port: int
    admin_token: str
    operator_token: str
    processes: list[ProcessRecord] = field(default_factory=list)  # in start order

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        """Kubeconfig of the unprivileged static user ``operator``."""
        return self.workdir / "operator.kubeconfig"

    @property
    def ca_cert(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def webhook_cert(self) -> Path:
        return self.workdir / "pki" / "webhook.crt"

    @property
    def webhook_key(self) -> Path:
        return self.workdir / "pki" / "webhook.key"

    def log_path(self, component: str) -> Path:
        return self.workdir / "logs" / f"{component}.log"

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """Environment for subprocesses that talk to this cluster (kubectl, helm, the operator)."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        env["PATH"] = os.pathsep.join(
            [str(Path(kubectl_binary()).parent), str(self.bin_dir), env.get("PATH", "")]
        )
        return env

    def write_kubeconfig(self, path: Path, token: str) -> Path:
        return write_kubeconfig(path, server=self.server, ca_cert=self.ca_cert, token=token)

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [kubectl_binary(), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(kubeconfig),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise CommandFailed(result.returncode, result.args, result.stdout, result.stderr)
        return result

    def helm(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        helm_home = self.workdir / "helm"
        env = self.env()
        for var, sub in (
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_DATA_HOME", "data"),
        ):
            env[var] = str(helm_home / sub)
        result = subprocess.run(
            [str(self.bin_dir / "helm"), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise CommandFailed(result.returncode, result.args, result.stdout, result.stderr)
        return result

    def save(self) -> None:
        state = asdict(self)
        state["workdir"], state["bin_dir"] = str(self.workdir), str(self.bin_dir)
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, workdir: Path) -> ControlPlane:
        state = json.loads((workdir / "state.json").read_text())
        return cls(
            workdir=Path(state["workdir"]),
            bin_dir=Path(state["bin_dir"]),
            api_port=state["api_port"],
            admin_token=state["admin_token"],
            operator_token=state["operator_token"],
            processes=[record_from_json(p) for p in state.get("processes", [])],
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class _Launcher:
    def __init__(self, plane: ControlPlane, progress: Callable[[str], None]) -> None:
        self.plane = plane
        self.progress = progress
        self.children: dict[str, Started] = {}

    def launch(self, component: str, binary: str, args: Sequence[str]) -> None:
        argv = [str(self.plane.bin_dir / binary), *args]
        child = start_process(component, argv, self.plane.log_path(component))
        self.children[component] = child
        self.plane.processes.append(child.record)
        self.plane.save()

    def wait_until(self, component: str, ready: Callable[[], bool], timeout: float) -> None:
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            child = self.children.get(component)
            process = child.process if child else None
            if process is not None and process.poll() is not None:
                raise ClusterStartError(
                    f"{component} exited with code {process.returncode} while starting; "
                    f"its log ({self.plane.log_path(component)}):\n{_log_tail(self.plane.log_path(component))}"
                )
            if ready():
                self.progress(f"{component} ready in {time.monotonic() - started:.1f} s")
                return
            time.sleep(0.2)
        raise ClusterStartError(
            f"{component} not ready after {timeout:.0f} s; its log "
            f"({self.plane.log_path(component)}):\n{_log_tail(self.plane.log_path(component))}"
        )


def _https_ok(url: str, token: str | None = None, cafile: Path | None = None) -> bool:
    context = (
        ssl.create_default_context(cafile=str(cafile))
        if cafile
        else ssl._create_unverified_context()
    )
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=context, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start(
    workdir: Path,
    bin_dir: Path,
    progress: Callable[[str], None] = lambda _: None,
    timeout: float = 120,
) -> ControlPlane:
    """Start every component in ``workdir`` (created if needed) and wait until all are ready.

    On failure, everything started so far is stopped and ``ClusterStartError`` names the
    component and shows its log.
    """
    missing = [
        b
        for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
        if not (bin_dir / b).exists()
    ]
    if missing:
        raise ClusterStartError(
            f"missing binaries in {bin_dir}: {', '.join(missing)}; run scripts/build-tools.sh"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    pki = make_pki(workdir / "pki")
    identities = {
        "admin": Identity.new("admin", "system:masters"),
        "kcm": Identity.new("system:kube-controller-manager", "system:masters"),
        "scheduler": Identity.new("system:kube-scheduler", "system:masters"),
        "kwok": Identity.new("kwok", "system:masters"),
        "operator": Identity.new(OPERATOR_USER, "tiergate:operators"),
    }
    write_token_file(workdir / "tokens.csv", list(identities.values()))
    plane = ControlPlane(
        workdir=workdir,
        bin_dir=bin_dir,
        api_port=_free_port(),
        admin_token=identities["admin"].token,
        operator_token=identities["operator"].token,
    )
    kubeconfigs = {
        name: plane.write_kubeconfig(workdir / f"{name}.kubeconfig", identity.token)
        for name, identity in identities.items()
    }
    launcher = _Launcher(plane, progress)
    try:
        _start_components(plane, launcher, pki.directory, kubeconfigs, timeout)
    except BaseException:
        stop(workdir)
        raise
    return plane


def _start_components(
    plane: ControlPlane,
    launcher: _Launcher,
    pki_dir: Path,
    kubeconfigs: dict[str, Path],
    timeout: float,
) -> None:
    workdir = plane.workdir
    etcd_port, etcd_peer = _free_port(), _free_port()
    launcher.launch(
        "etcd",
        "etcd",
        [
            "--name=default",
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            "--listen-metrics-urls=",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
    )
    launcher.wait_until("etcd", lambda: _http_ok(f"http://127.0.0.1:{etcd_port}/health"), timeout)

    launcher.launch(
        "kube-apiserver",
        "kube-apiserver",
        [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={plane.api_port}",
            "--endpoint-reconciler-type=none",
            f"--cert-dir={pki_dir}",
            f"--tls-cert-file={pki_dir / 'apiserver.crt'}",
            f"--tls-private-key-file={pki_dir / 'apiserver.key'}",
            f"--client-ca-file={pki_dir / 'ca.crt'}",
            f"--token-auth-file={workdir / 'tokens.csv'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki_dir / 'sa.pub'}",
            f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ],
    )
    launcher.wait_until(
        "kube-apiserver",
        lambda: _https_ok(f"{plane.server}/readyz", plane.admin_token, plane.ca_cert),
        timeout,
    )

    kcm_port, scheduler_port = _free_port(), _free_port()
    launcher.launch(
        "kube-controller-manager",
        "kube-controller-manager",
        [
            f"--kubeconfig={kubeconfigs['kcm']}",
            f"--authentication-kubeconfig={kubeconfigs['kcm']}",
            f"--authorization-kubeconfig={kubeconfigs['kcm']}",
            "--bind-address=127.0.0.1",
            f"--secure-port={kcm_port}",
            "--leader-elect=false",
            f"--controllers={_CONTROLLERS}",
            f"--service-account-private-key-file={pki_dir / 'sa.key'}",
            f"--root-ca-file={pki_dir / 'ca.crt'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--use-service-account-credentials=false",
        ],
    )
    launcher.launch(
        "kube-scheduler",
        "kube-scheduler",
        [
            f"--kubeconfig={kubeconfigs['scheduler']}",
            f"--authentication-kubeconfig={kubeconfigs['scheduler']}",
            f"--authorization-kubeconfig={kubeconfigs['scheduler']}",
            "--bind-address=127.0.0.1",
            f"--secure-port={scheduler_port}",
            "--leader-elect=false",
        ],
    )
    stages = plane.bin_dir / "kwok-stages"
    launcher.launch(
        "kwok",
        "kwok",
        [
            f"--kubeconfig={kubeconfigs['kwok']}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=10.244.0.0/24",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
            f"--config={stages / 'node/fast/node-initialize.yaml'}",
            f"--config={stages / 'node/heartbeat-with-lease/node-heartbeat-with-lease.yaml'}",
            f"--config={stages / 'pod/fast/pod-ready.yaml'}",
            f"--config={stages / 'pod/fast/pod-complete.yaml'}",
            f"--config={stages / 'pod/fast/pod-delete.yaml'}",
        ],
    )
    launcher.wait_until(
        "kube-controller-manager",
        lambda: _https_ok(f"https://127.0.0.1:{kcm_port}/healthz"),
        timeout,
    )
    launcher.wait_until(
        "kube-scheduler", lambda: _https_ok(f"https://127.0.0.1:{scheduler_port}/healthz"), timeout
    )
    plane.kubectl("apply", "-f", "-", input=json.dumps(_FAKE_NODE_MANIFEST))
    launcher.wait_until("kwok", lambda: _node_ready(plane), timeout)
    _report_ephemeral_storage(plane)


def _report_ephemeral_storage(plane: ControlPlane) -> None:
    """Give the fake node the ephemeral-storage a real kubelet reports.

    kwok's node-initialize stage sets only cpu, memory and pods, so a pod that requests
    ephemeral storage (the operator's and every gateway's do, as kube-score asks) would never
    be scheduled. The stage keeps a capacity already set, and nothing else rewrites it.
    """
    storage = {"ephemeral-storage": "1Ti"}
    patch = {"status": {"capacity": storage, "allocatable": storage}}
    plane.kubectl(
        "patch", "node", FAKE_NODE, "--subresource=status", "--type=merge", "-p", json.dumps(patch)
    )


def _node_ready(plane: ControlPlane) -> bool:
    result = plane.kubectl(
        "get",
        "node",
        FAKE_NODE,
        "-o",
        'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
        check=False,
        timeout=10,
    )
    return result.stdout.strip() == "True"


def stop(workdir: Path, grace: float = 10) -> list[str]:
    """Stop the recorded processes in reverse start order; returns the components stopped."""
    if not (workdir / "state.json").exists():
        return []
    plane = ControlPlane.load(workdir)
    stopped = [r.name for r in reversed(plane.processes) if stop_process(r, grace)]
    plane.processes.clear()
    plane.save()
    return stopped
