"""A reference to one namespaced object, and where it lives in the API (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tiergate_operator.registry import KINDS

__all__ = ["ObjectRef"]


@dataclass(frozen=True, order=True)
class ObjectRef:
    kind: str
    namespace: str
    name: str

    def path(self) -> str:
        return f"{KINDS[self.kind].collection_path(self.namespace)}/{self.name}"

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> ObjectRef:
        metadata = manifest["metadata"]
        return cls(manifest["kind"], metadata["namespace"], metadata["name"])
