"""Load a namespace's manifests from YAML the way the gather step hands them to translate()."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tiergate_gateway.contract import hash_client_key

Body = dict[str, Any]


@dataclass
class NamespaceInputs:
    routes: list[Body] = field(default_factory=list)
    tiers: list[Body] = field(default_factory=list)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)


def secret_digests(secret: Body) -> dict[str, str]:
    values = {
        key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()
    }
    values.update(secret.get("stringData") or {})
    return {key: hash_client_key(value) for key, value in sorted(values.items())}


def from_documents(
    documents: Iterable[Body], namespace: str = "demo", uid_seed: str = ""
) -> NamespaceInputs:
    inputs = NamespaceInputs()
    for document in documents:
        body = dict(document)
        metadata = body["metadata"] = dict(body["metadata"])
        metadata.setdefault("namespace", namespace)
        metadata.setdefault("uid", f"uid-{uid_seed}{body['kind'].lower()}-{metadata['name']}")
        metadata.setdefault("generation", 1)
        if body["kind"] == "ModelRoute":
            inputs.routes.append(body)
        elif body["kind"] == "ApiKeyTier":
            inputs.tiers.append(body)
        elif body["kind"] == "Secret":
            inputs.secrets[metadata["name"]] = secret_digests(body)
    return inputs


def load_documents(directory: Path) -> list[Body]:
    return [
        document
        for path in sorted(directory.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def load(directory: Path, namespace: str = "demo") -> NamespaceInputs:
    return from_documents(load_documents(directory), namespace)
