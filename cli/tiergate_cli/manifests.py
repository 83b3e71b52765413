"""Read a folder of manifests the way ``kubectl apply -f DIR -R`` would, for the offline commands.

Every ``*.yaml``/``*.yml`` below DIR, multi-document; ``kustomization.yaml`` is skipped.
ModelRoutes, ApiKeyTiers and Secrets are kept (other kinds are reported and ignored);
each document remembers its file and line, so errors can point at it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tiergate_operator.registry import API_KEY_TIER, MODEL_ROUTE, SECRET
from tiergate_operator.store import Store

__all__ = ["Document", "ManifestError", "ManifestSet", "load_manifests"]

Body = dict[str, Any]
_KINDS = (MODEL_ROUTE.kind, API_KEY_TIER.kind, SECRET.kind)
_SKIPPED_FILES = ("kustomization.yaml", "kustomization.yml")


class ManifestError(ValueError):
    """A manifest cannot be read: the message names the file and line."""


@dataclass(frozen=True)
class Document:
    path: Path
    line: int  # 1-based line where the document starts
    body: Body

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class ManifestSet:
    """The documents of one folder, per namespace, and what was skipped."""

    documents: list[tuple[str, Document]] = field(default_factory=list)  # (namespace, document)
    skipped: list[Document] = field(default_factory=list)

    @property
    def namespaces(self) -> list[str]:
        return sorted({namespace for namespace, _ in self.documents})

    def of_kind(self, kind: str, namespace: str | None = None) -> Iterator[Document]:
        return (
            doc
            for ns, doc in self.documents
            if doc.kind == kind and (namespace is None or ns == namespace)
        )

    def locate(self, namespace: str, kind: str, name: str) -> str:
        """``file:line`` of an object, for messages."""
        for ns, doc in self.documents:
            if (ns, doc.kind, doc.name) == (namespace, kind, name):
                return doc.where
        return "?"

    def secret_values(self, namespace: str) -> dict[str, dict[str, str]]:
        """``{secret: {key: value}}``, ``stringData`` over ``data`` as the API server merges them."""
        secrets: dict[str, dict[str, str]] = {}
        for doc in self.of_kind(SECRET.kind, namespace):
            values = {
                key: base64.b64decode(str(value)).decode("utf-8", errors="replace")
                for key, value in (doc.body.get("data") or {}).items()
            }
            values |= {key: str(value) for key, value in (doc.body.get("stringData") or {}).items()}
            secrets[doc.name] = values
        return secrets

    def store(
        self, namespace: str, extra_secrets: dict[str, dict[str, str]] | None = None
    ) -> Store:
        """The operator's watch store, filled as its watches would fill it for ``namespace``."""
        store = Store()
        store.namespace(namespace)  # exists even when it holds nothing
        secrets = self.secret_values(namespace) | (extra_secrets or {})
        created = {
            doc.name: str(doc.body["metadata"]["creationTimestamp"])
            for doc in self.of_kind(SECRET.kind, namespace)
            if doc.body["metadata"].get("creationTimestamp")
        }
        for name, values in secrets.items():
            encoded = {
                key: base64.b64encode(value.encode()).decode() for key, value in values.items()
            }
            store.put_secret(namespace, name, encoded, created.get(name))
        for doc in self.of_kind(MODEL_ROUTE.kind, namespace):
            store.put_route(_as_stored(doc.body, namespace))
        for doc in self.of_kind(API_KEY_TIER.kind, namespace):
            store.put_tier(_as_stored(doc.body, namespace))
        return store


def _as_stored(body: Body, namespace: str) -> Body:
    """What the API server would return: namespace set, and a uid and generation."""
    metadata = dict(body["metadata"])
    metadata["namespace"] = namespace
    metadata.setdefault("uid", f"<uid of {body['kind']}/{metadata['name']}>")
    metadata.setdefault("generation", 1)
    return {**body, "metadata": metadata}


def _yaml_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ManifestError(f"{root}: no such file or directory")
    files = [p for pattern in ("*.yaml", "*.yml") for p in root.rglob(pattern)]
    return sorted(p for p in files if p.name not in _SKIPPED_FILES)


def _documents(path: Path) -> Iterator[tuple[int, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if node is None:
                continue
            loader = yaml.SafeLoader("")
            yield node.start_mark.line + 1, loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        position = f"{mark.line + 1}:{mark.column + 1}" if mark else "?"
        raise ManifestError(
            f"{path}:{position}: invalid YAML: {error.problem or error.context}"
        ) from error


def _checked(path: Path, line: int, body: Any) -> Document:
    where = f"{path}:{line}"
    if not isinstance(body, dict):
        raise ManifestError(f"{where}: a manifest must be a mapping, not {type(body).__name__}")
    if not isinstance(body.get("kind"), str) or not isinstance(body.get("apiVersion"), str):
        raise ManifestError(f"{where}: a manifest needs apiVersion and kind")
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise ManifestError(f"{where}: {body['kind']} has no metadata.name")
    for data_field in ("data", "stringData"):
        if body["kind"] == SECRET.kind and not isinstance(body.get(data_field) or {}, dict):
            raise ManifestError(
                f"{where}: Secret {metadata['name']}: {data_field} must be a mapping"
            )
    return Document(path, line, body)


def load_manifests(root: Path, namespace: str | None = None) -> ManifestSet:
    """Every manifest under ``root``; ``namespace`` overrides unset ones (like ``kubectl -n``)."""
    found = ManifestSet()
    for path in _yaml_files(root):
        for line, body in _documents(path):
            if body is None:
                continue
            doc = _checked(path, line, body)
            if doc.kind == "Kustomization":
                continue
            if doc.kind not in _KINDS or doc.kind == "List":
                found.skipped.append(doc)
                continue
            own = doc.body["metadata"].get("namespace")
            if namespace and own and own != namespace:
                raise ManifestError(
                    f"{doc.where}: {doc.kind} {doc.name} is in namespace {own!r}, not {namespace!r} (-n)"
                )
            found.documents.append((namespace or own or "default", doc))
    if not found.documents:
        raise ManifestError(f"{root}: no ModelRoute, ApiKeyTier or Secret manifests found")
    return found
