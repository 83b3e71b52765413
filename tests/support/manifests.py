"""The one way tests turn manifests into what the operator sees: the CLI's loader.

``tiergate_cli.manifests`` reads folders the way ``kubectl apply -f DIR -R`` does and fills
the operator's watch ``Store`` as its watches would (``tiergate render`` uses the same path),
so unit, golden and CLI tests all start from identical namespace state.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tiergate_cli.manifests import Document, ManifestSet, load_manifests
from tiergate_contract import GatewayConfig
from tiergate_operator.store import Store
from tiergate_operator.translate import Translation, translate

__all__ = ["NOW", "store_of", "translate_namespace"]

Body = dict[str, Any]
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _documents(documents: Iterable[Body], namespace: str) -> ManifestSet:
    return ManifestSet(
        documents=[
            (namespace, Document(Path("<test>"), line, copy.deepcopy(body)))
            for line, body in enumerate(documents, start=1)
        ]
    )


def store_of(source: Path | Iterable[Body], namespace: str = "demo") -> Store:
    """A folder of manifests, or manifest bodies, as the operator's store for ``namespace``."""
    manifests = (
        load_manifests(source, namespace)
        if isinstance(source, Path)
        else _documents(source, namespace)
    )
    return manifests.store(namespace)


def translate_namespace(
    store: Store, namespace: str = "demo", previous: Mapping[str, GatewayConfig] | None = None
) -> Translation:
    state = store.namespace(namespace)
    return translate(
        namespace,
        state.routes.values(),
        state.tiers.values(),
        state.secrets,
        previous or {},
        state.secret_created,
    )
