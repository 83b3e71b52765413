"""Where configs come from: a file (hot reloaded) or one ConfigMap watched through the Kubernetes API.

File: polls ``stat`` (inode, mtime, size) every ``interval``; this sees in-place
writes, renames and Kubernetes' symlink swap of mounted ConfigMaps (``stat``
follows the ``..data`` link), at the cost of one syscall per interval.

A gzip-compressed file (a ConfigMap's ``config.json.gz`` binaryData key, mounted)
is recognised by its magic bytes and unpacked by ``parse_config``.

ConfigMap: a list-then-watch loop on ``/api/v1/namespaces/<ns>/configmaps``
with a field selector on the name, using the pod's service account (in a
cluster) or a kubeconfig. Each ADDED/MODIFIED event offers ``config.json``
(inline ``data``, or gzip ``binaryData`` for large configs, see
``contract.configmap_payload``) to the store at once, so a new config serves
well within a second.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .contract import CONFIG_GZIP_KEY, CONFIG_KEY, config_from_configmap

__all__ = ["FileSource", "KubeAccess", "KubeSource", "kube_access"]

_log = logging.getLogger("tiergate_gateway.sources")
Offer = Callable[[bytes, str], bool]

_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class FileSource:
    def __init__(self, path: Path, offer: Offer, interval: float = 0.25) -> None:
        self._path = path
        self._offer = offer
        self._interval = interval
        self._seen: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def poll(self) -> None:
        """Offer the file if it changed since the last look."""
        identity = self._identity()
        if identity is None or identity == self._seen:
            return
        try:
            data = self._path.read_bytes()
        except OSError as exc:
            _log.warning("cannot read config file %s: %s", self._path, exc)
            return
        self._seen = identity
        self._offer(data, str(self._path))

    async def start(self) -> None:
        self.poll()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.poll()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass(frozen=True)
class KubeAccess:
    server: str
    headers: dict[str, str]
    ssl: ssl.SSLContext | bool


def _from_kubeconfig(path: Path) -> KubeAccess:
    import yaml  # only the ConfigMap source needs it

    doc = yaml.safe_load(path.read_text())
    current = doc.get("current-context")
    context = next(c["context"] for c in doc["contexts"] if c["name"] == current)
    cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in doc.get("users", []) if u["name"] == context.get("user"))
    headers: dict[str, str] = {}
    ctx: ssl.SSLContext | bool = False
    server = str(cluster["server"])
    if server.startswith("https"):
        tls = ssl.create_default_context()
        if "certificate-authority-data" in cluster:
            tls.load_verify_locations(
                cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
            )
        elif "certificate-authority" in cluster:
            tls.load_verify_locations(cafile=cluster["certificate-authority"])
        if cluster.get("insecure-skip-tls-verify"):
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        cert, key = user.get("client-certificate"), user.get("client-key")
        if "client-certificate-data" in user:
            folder = Path(tempfile.mkdtemp(prefix="tiergate-kube-"))
            cert, key = str(folder / "tls.crt"), str(folder / "tls.key")
            Path(cert).write_bytes(base64.b64decode(user["client-certificate-data"]))
            Path(key).write_bytes(base64.b64decode(user["client-key-data"]))
            os.chmod(key, 0o600)
        if cert and key:
            tls.load_cert_chain(cert, key)
        ctx = tls
    if "token" in user:
        headers["Authorization"] = f"Bearer {user['token']}"
    elif "tokenFile" in user:
        headers["Authorization"] = f"Bearer {Path(user['tokenFile']).read_text().strip()}"
    return KubeAccess(server.rstrip("/"), headers, ctx)


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


class KubeSource:
    """Watches ``namespace/name`` and offers its ``config.json`` on every change."""

    def __init__(self, configmap: str, offer: Offer, access: Callable[[], KubeAccess]) -> None:
        self._namespace, self._name = configmap.split("/", 1)
        self._offer = offer
        self._access = access
        self._task: asyncio.Task[None] | None = None
        self.first_sync = asyncio.Event()
        self._source = f"configmap {configmap}"

    def _handle(self, obj: dict[str, Any]) -> None:
        data = config_from_configmap(obj)
        if data is None:
            _log.error("%s has neither %s nor %s", self._source, CONFIG_KEY, CONFIG_GZIP_KEY)
            self._offer(b"", self._source)
        else:
            self._offer(data, self._source)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.first_sync.wait(), 10)

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._watch_once()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning(
                    "watching %s failed, retrying in %.1fs: %s", self._source, backoff, exc
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _watch_once(self) -> None:
        access = self._access()
        base = f"{access.server}/api/v1/namespaces/{self._namespace}/configmaps"
        selector = f"metadata.name={self._name}"
        import aiohttp  # imported on use: it costs ~0.25 s of start-up for file-based gateways

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=330)
        async with aiohttp.ClientSession(headers=access.headers, timeout=timeout) as session:
            async with session.get(
                base, params={"fieldSelector": selector}, ssl=access.ssl
            ) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"list returned HTTP {resp.status}")
                listing = await resp.json()
            for item in listing.get("items", []):
                self._handle(item)
            if not listing.get("items"):
                _log.warning("%s does not exist yet", self._source)
            self.first_sync.set()
            version = listing["metadata"]["resourceVersion"]
            params = {
                "fieldSelector": selector,
                "watch": "1",
                "resourceVersion": version,
                "timeoutSeconds": "300",
                "allowWatchBookmarks": "true",
            }
            async with session.get(base, params=params, ssl=access.ssl) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"watch returned HTTP {resp.status}")
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = orjson.loads(line)
                    kind = event.get("type")
                    if kind in ("ADDED", "MODIFIED"):
                        self._handle(event["object"])
                    elif kind == "ERROR":
                        raise RuntimeError(f"watch error: {event.get('object', {}).get('message')}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
