"""How to reach the Kubernetes API: the pod's service account, else a kubeconfig.

Python's ``ssl`` loads a client certificate and key only from files. A kubeconfig
holding them inline (``client-certificate-data``, ``client-key-data``) has them
written into a fresh private directory (0700, files 0600), loaded, and removed
again before ``kube_access`` returns, whatever happens. The resulting TLS context
is kept for as long as the kubeconfig's TLS settings (and the files they name) are
unchanged, so reconnects write nothing. Tokens are read on every call: a service
account token file rotates.
"""

from __future__ import annotations

import base64
import functools
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["KubeAccess", "kube_access"]

_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class KubeAccess:
    server: str
    headers: dict[str, str]
    ssl: ssl.SSLContext | bool


def kube_access(kubeconfig: Path | None) -> KubeAccess:
    """In a pod: the service account; else the kubeconfig (flag, ``KUBECONFIG``, ``~/.kube/config``)."""
    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
        host, port = (
            os.environ["KUBERNETES_SERVICE_HOST"],
            os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
        )
        tls = ssl.create_default_context(cafile=str(_SA_DIR / "ca.crt"))
        token = (_SA_DIR / "token").read_text().strip()
        return KubeAccess(f"https://{host}:{port}", {"Authorization": f"Bearer {token}"}, tls)
    path = kubeconfig or Path(os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config")))
    return _from_kubeconfig(path)


def _from_kubeconfig(path: Path) -> KubeAccess:
    import yaml  # only the ConfigMap source needs it

    doc = yaml.safe_load(path.read_text())
    current = doc.get("current-context")
    context = next(c["context"] for c in doc["contexts"] if c["name"] == current)
    cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in doc.get("users", []) if u["name"] == context.get("user"))
    server = str(cluster["server"])
    tls: ssl.SSLContext | bool = False
    if server.startswith("https"):
        tls = _tls_context(_TlsSettings.of(cluster, user))
    headers: dict[str, str] = {}
    if "token" in user:
        headers["Authorization"] = f"Bearer {user['token']}"
    elif "tokenFile" in user:
        headers["Authorization"] = f"Bearer {Path(user['tokenFile']).read_text().strip()}"
    return KubeAccess(server.rstrip("/"), headers, tls)


def _stamp(path: str | None) -> tuple[int, int] | None:
    """Changes when the file does: part of the cache key for settings that name files."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class _TlsSettings:
    """Everything the TLS context is built from (hashable: the cache key)."""

    ca_data: str | None
    ca_file: str | None
    insecure: bool
    cert_data: str | None
    key_data: str | None
    cert_file: str | None
    key_file: str | None
    file_stamps: tuple[tuple[int, int] | None, ...]

    @classmethod
    def of(cls, cluster: dict[str, Any], user: dict[str, Any]) -> _TlsSettings:
        ca_file, cert_file, key_file = (
            cluster.get("certificate-authority"),
            user.get("client-certificate"),
            user.get("client-key"),
        )
        return cls(
            ca_data=cluster.get("certificate-authority-data"),
            ca_file=ca_file,
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
            cert_data=user.get("client-certificate-data"),
            key_data=user.get("client-key-data"),
            cert_file=cert_file,
            key_file=key_file,
            file_stamps=(_stamp(ca_file), _stamp(cert_file), _stamp(key_file)),
        )


@functools.lru_cache(maxsize=4)
def _tls_context(settings: _TlsSettings) -> ssl.SSLContext:
    tls = ssl.create_default_context()
    if settings.ca_data is not None:
        tls.load_verify_locations(cadata=base64.b64decode(settings.ca_data).decode())
    elif settings.ca_file is not None:
        tls.load_verify_locations(cafile=settings.ca_file)
    if settings.insecure:
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    if settings.cert_data is not None:
        _load_inline_identity(
            tls,
            base64.b64decode(settings.cert_data),
            base64.b64decode(settings.key_data or ""),
        )
    elif settings.cert_file and settings.key_file:
        tls.load_cert_chain(settings.cert_file, settings.key_file)
    return tls


def _load_inline_identity(tls: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """Load a certificate and key held in memory: through files that exist only meanwhile."""
    with tempfile.TemporaryDirectory(prefix="tiergate-kube-") as folder:  # created 0700
        cert_path, key_path = os.path.join(folder, "tls.crt"), os.path.join(folder, "tls.key")
        _write_private(cert_path, cert)
        _write_private(key_path, key)
        tls.load_cert_chain(cert_path, key_path)


def _write_private(path: str, data: bytes) -> None:
    # Created 0600 from the start: never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
