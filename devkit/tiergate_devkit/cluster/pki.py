"""Certificates, tokens and kubeconfigs for the local control plane (openssl CLI)."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Identity", "Pki", "make_pki", "write_kubeconfig", "write_token_file"]


@dataclass(frozen=True)
class Pki:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def service_account_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.directory / "sa.pub"

    @property
    def webhook_cert(self) -> Path:
        return self.directory / "webhook.crt"

    @property
    def webhook_key(self) -> Path:
        return self.directory / "webhook.key"


@dataclass(frozen=True)
class Identity:
    """A static-token user of the API server."""

    user: str
    uid: str
    groups: tuple[str, ...]
    token: str

    @classmethod
    def new(cls, user: str, *groups: str) -> Identity:
        return cls(user=user, uid=f"uid-{user}", groups=groups, token=secrets.token_hex(24))


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _signed_cert(pki: Pki, name: str, subject: str, extensions: str, days: int) -> None:
    key, csr, ext = (pki.directory / f"{name}.{suffix}" for suffix in ("key", "csr", "ext"))
    ext.write_text(extensions)
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        subject,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(pki.ca_cert),
        "-CAkey",
        str(pki.ca_key),
        "-CAcreateserial",
        "-days",
        str(days),
        "-extfile",
        str(ext),
        "-out",
        str(pki.directory / f"{name}.crt"),
    )


def make_pki(directory: Path) -> Pki:
    """A CA, the API server's serving cert, service-account keys and a webhook cert."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(pki.ca_key),
        "-out",
        str(pki.ca_cert),
        "-days",
        "3650",
        "-subj",
        "/CN=tiergate-dev-ca",
    )
    _signed_cert(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n",
        days=3650,
    )
    _signed_cert(
        pki,
        "webhook",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        days=30,
    )
    _openssl("genrsa", "-out", str(pki.service_account_key), "2048")
    _openssl(
        "rsa", "-in", str(pki.service_account_key), "-pubout", "-out", str(pki.service_account_pub)
    )
    return pki


def write_token_file(path: Path, identities: list[Identity]) -> None:
    lines = [f'{i.token},{i.user},{i.uid},"{",".join(i.groups)}"' for i in identities]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def write_kubeconfig(path: Path, *, server: str, ca_cert: Path, token: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f'clusters: [{{name: local, cluster: {{server: "{server}", certificate-authority: "{ca_cert}"}}}}]\n'
        f'users: [{{name: user, user: {{token: "{token}"}}}}]\n'
        "contexts: [{name: local, context: {cluster: local, user: user, namespace: default}}]\n"
        "current-context: local\n"
    )
    path.chmod(0o600)
    return path
