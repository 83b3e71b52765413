"""The operator's own pipeline, offline: manifests -> Store -> ``desired_state``.

Shared by ``render``, ``gateway`` and ``dev up``, so all three see exactly what the
operator would apply. Offline there is no last good config to carry over, so an
object with a problem is left out (the operator would keep serving its last good).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tiergate_cli.manifests import ManifestSet
from tiergate_operator.desired import DesiredState, desired_state
from tiergate_operator.settings import OperatorSettings

__all__ = ["NamespaceRender", "problems", "render_namespace"]


@dataclass(frozen=True)
class NamespaceRender:
    namespace: str
    desired: DesiredState


def render_namespace(
    manifests: ManifestSet,
    namespace: str,
    settings: OperatorSettings,
    extra_secrets: dict[str, dict[str, str]] | None = None,
) -> NamespaceRender:
    store = manifests.store(namespace, extra_secrets)
    return NamespaceRender(
        namespace, desired_state(namespace, store.namespace(namespace), {}, settings)
    )


def problems(manifests: ManifestSet, rendered: NamespaceRender) -> Iterator[str]:
    """One line per object the operator would mark ``Accepted=False``, with its file."""
    desired = rendered.desired
    for kind, found in (
        ("ModelRoute", desired.route_problems),
        ("ApiKeyTier", desired.tier_problems),
    ):
        for name, problem in sorted(found.items()):
            where = manifests.locate(rendered.namespace, kind, name)
            yield f"{where}: {kind} {rendered.namespace}/{name}: {problem.reason}: {problem.message}"
