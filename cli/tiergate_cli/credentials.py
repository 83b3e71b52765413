"""Secret values as the gateway reads them: files ``<dir>/<secret>/<key>`` in a private folder.

Used by ``gateway -f`` (values from the manifests and ``--keys-dir``) and ``dev up``
(values read from the API). Values are written, never printed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from tiergate_cli.output import CommandError
from tiergate_contract import CredentialRef, GatewayConfig

__all__ = ["credential_refs", "read_keys_dir", "write_credentials"]


def credential_refs(config: GatewayConfig) -> list[CredentialRef]:
    """Every credential a config refers to: the targets' and the tiers' own upstreams."""
    refs = [t.credential for r in config.routes for t in r.targets]
    refs += [t.credential for c in config.catalogs for t in c.targets]
    refs += [tier.upstream.credential for tier in config.tiers]
    return sorted({ref for ref in refs if ref is not None}, key=lambda ref: (ref.secret, ref.key))


def read_keys_dir(folder: Path) -> dict[str, dict[str, str]]:
    """``<folder>/<secret>/<key>`` files -> ``{secret: {key: value}}`` (a Secret volume's layout)."""
    if not folder.is_dir():
        raise CommandError(f"--keys-dir {folder}: not a folder of <secret>/<key> files")
    return {
        secret.name: {
            key.name: key.read_text(encoding="utf-8").strip()
            for key in sorted(secret.iterdir())
            if key.is_file() and not key.name.startswith(".")
        }
        for secret in sorted(folder.iterdir())
        if secret.is_dir() and not secret.name.startswith(".")
    }


def write_credentials(
    folder: Path, refs: Iterable[CredentialRef], secrets: Mapping[str, Mapping[str, str]]
) -> list[CredentialRef]:
    """Write each referenced value (mode 0600, folders 0700); returns the refs with no value."""
    missing = []
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for ref in refs:
        value = secrets.get(ref.secret, {}).get(ref.key)
        if value is None:
            missing.append(ref)
            continue
        secret_dir = folder / ref.secret
        secret_dir.mkdir(mode=0o700, exist_ok=True)
        path = secret_dir / ref.key
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(value)
    return missing
