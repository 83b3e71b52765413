"""Reaching the Kubernetes API: kubeconfig and service-account access, and the client key a
kubeconfig holds inline, which must never stay on disk (nor be written again per reconnect)."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_kube_api import FakeApi, cm_object, line, recorder
from tiergate_gateway.sources import KubeSource, kube_access
from tiergate_gateway.sources import kubeconfig as kubeconfig_module

# The fake API server loads its own key with this, out of sight of the spy below.
_LOAD_CERT_CHAIN = ssl.SSLContext.load_cert_chain


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self) -> ssl.SSLContext:
        """TLS for the fake API server: it refuses clients without a certificate of our CA."""
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca))
        _LOAD_CERT_CHAIN(tls, self.server_cert, self.server_key)
        tls.verify_mode = ssl.CERT_REQUIRED
        return tls


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _signed(folder: Path, name: str, extensions: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (folder / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    ext.write_text(extensions)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(folder / "ca.crt"), "-CAkey",
        str(folder / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", str(ext),
        "-out", str(cert),
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt"),
        "-days", "2", "-subj", "/CN=test-ca",
    )  # fmt: skip
    server = _signed(folder, "server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    client = _signed(folder, "client", "extendedKeyUsage=clientAuth\n")
    return Pki(folder / "ca.crt", *server, *client)


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path, server: str, pki: Pki, *, key: str | None = None, token: str = "t0"
) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        f"clusters: [{{name: k, cluster: {{server: '{server}', "
        f"certificate-authority-data: {b64(pki.ca)}}}}}]\n"
        f"users: [{{name: u, user: {{client-certificate-data: {b64(pki.client_cert)}, "
        f"client-key-data: {key or b64(pki.client_key)}, token: {token}}}}}]\n"
    )
    return path


@dataclass
class KeyFiles:
    """What the key file looked like while ``ssl`` loaded it."""

    loads: list[tuple[int, int, bytes]]  # (directory mode, key file mode, key bytes)


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory ``tempfile`` uses, empty at the start."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def key_files(monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyFiles]:
    """Record each client-certificate load; start with no cached TLS context."""
    seen = KeyFiles([])
    load = ssl.SSLContext.load_cert_chain

    def spy(self: ssl.SSLContext, certfile: Any, keyfile: Any = None, password: Any = None) -> None:
        mode = os.stat(keyfile).st_mode
        folder_mode = os.stat(os.path.dirname(keyfile)).st_mode
        seen.loads.append(
            (stat.S_IMODE(folder_mode), stat.S_IMODE(mode), Path(keyfile).read_bytes())
        )
        load(self, certfile, keyfile, password)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    kubeconfig_module._tls_context.cache_clear()
    yield seen
    kubeconfig_module._tls_context.cache_clear()


def test_an_inline_client_key_is_loaded_from_private_files_removed_at_once(
    pki: Pki, tmp_path: Path, private_tmp: Path, key_files: KeyFiles
) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:6443/", pki)
    access = kube_access(config)
    assert access.server == "https://127.0.0.1:6443"
    assert access.headers == {"Authorization": "Bearer t0"}
    assert isinstance(access.ssl, ssl.SSLContext)
    assert key_files.loads == [(0o700, 0o600, pki.client_key.read_bytes())]
    assert leftovers(private_tmp) == []


def test_reconnects_reuse_the_tls_context_and_write_no_key_again(
    pki: Pki, tmp_path: Path, private_tmp: Path, key_files: KeyFiles
) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:6443", pki)
    first = kube_access(config)
    write_kubeconfig(config, "https://127.0.0.1:6443", pki, token="t1")  # a rotated token
    again = [kube_access(config) for _ in range(5)]
    assert all(a.ssl is first.ssl for a in again)
    assert again[-1].headers == {"Authorization": "Bearer t1"}
    assert len(key_files.loads) == 1
    assert leftovers(private_tmp) == []


def test_a_key_ssl_refuses_leaves_nothing_on_disk(
    pki: Pki, tmp_path: Path, private_tmp: Path, key_files: KeyFiles
) -> None:
    garbage = base64.b64encode(b"-----BEGIN PRIVATE KEY-----\nnope\n").decode()
    config = write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:6443", pki, key=garbage)
    with pytest.raises(ssl.SSLError):
        kube_access(config)
    assert len(key_files.loads) == 1
    assert leftovers(private_tmp) == []


def test_plain_http_with_a_token_file_read_on_every_call(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    config = tmp_path / "kubeconfig"
    config.write_text(
        "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:8001/'}}]\n"
        f"users: [{{name: u, user: {{tokenFile: '{token}'}}}}]\n"
    )
    assert kube_access(config) == kube_access(config)
    assert kube_access(config).ssl is False
    token.write_text("second\n")
    assert kube_access(config).headers == {"Authorization": "Bearer second"}
    assert kube_access(config).server == "http://127.0.0.1:8001"


def test_in_a_pod_the_service_account_is_used(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ca.crt").write_bytes(pki.ca.read_bytes())
    (tmp_path / "token").write_text("sa-token\n")
    monkeypatch.setattr(kubeconfig_module, "_SA_DIR", tmp_path)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "8443")
    access = kube_access(None)
    assert (access.server, access.headers) == (
        "https://10.0.0.1:8443",
        {"Authorization": "Bearer sa-token"},
    )
    assert isinstance(access.ssl, ssl.SSLContext)


async def test_the_watch_presents_the_client_certificate_and_leaves_no_key_on_disk(
    pki: Pki, tmp_path: Path, private_tmp: Path, key_files: KeyFiles
) -> None:
    lists = [{"kind": "ConfigMapList", "metadata": {"resourceVersion": "1"}, "items": []}]
    # Three watches the server ends at once (three reconnects), then one that stays open.
    watches: list[list[Any]] = [
        [line("MODIFIED", cm_object(2, "A")), 1.1],
        [line("MODIFIED", cm_object(3, "B")), 1.1],
        [line("MODIFIED", cm_object(4, "C")), 1.1],
        [line("MODIFIED", cm_object(5, "D")), None],
    ]
    offered, offer, done = recorder(b"D")
    async with FakeApi(lists, watches, tls=pki.server_context()) as api:
        config = write_kubeconfig(tmp_path / "kubeconfig", api.url, pki)
        source = KubeSource("ns/gw", offer, lambda: kube_access(config))
        await source.start()
        try:
            await asyncio.wait_for(done.wait(), 15)
            assert leftovers(private_tmp) == []
        finally:
            await source.stop()
    assert offered == [b"A", b"B", b"C", b"D"]
    assert source.watches == 4 and source.lists == 1
    assert len(key_files.loads) == 1  # once for the four connections
    assert leftovers(private_tmp) == []


async def test_a_stopped_watch_leaves_no_key_on_disk_while_connecting(
    pki: Pki, tmp_path: Path, private_tmp: Path, key_files: KeyFiles
) -> None:
    # Stopped (cancelled) while its watch is open: nothing of the key remains.
    lists = [{"kind": "ConfigMapList", "metadata": {"resourceVersion": "1"}, "items": []}]
    async with FakeApi(lists, [[None]], tls=pki.server_context()) as api:
        config = write_kubeconfig(tmp_path / "kubeconfig", api.url, pki)
        source = KubeSource("ns/gw", recorder(b"")[1], lambda: kube_access(config))
        await source.start()
        assert source.lists == 1
        await source.stop()
    assert len(key_files.loads) == 1
    assert leftovers(private_tmp) == []
