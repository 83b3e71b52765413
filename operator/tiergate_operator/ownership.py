"""Is a live object tiergate's to write? (pure)

The operator writes, patches or deletes only what it created. An object is ours when it
carries our labels and an ownerReference to a tiergate object, or when our field manager
wrote it (an object of ours whose labels someone removed). It may be deleted only when it
carries both our labels and such an ownerReference: a tiergate object owns it, so garbage
collection would remove it too. Anything else holding a name we need is someone else's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tiergate_operator.registry import CRD_GROUP, CUSTOM_KINDS, MANAGED_BY_LABEL, OPERATOR

__all__ = [
    "carries_our_labels",
    "describe_holder",
    "fields_handed_to_apply",
    "has_tiergate_owner",
    "is_ours",
    "may_delete",
    "our_update_fields",
    "written_by_us",
]

Body = dict[str, Any]
_OWNER_KINDS = frozenset(kind.kind for kind in CUSTOM_KINDS)


def _metadata(body: Body) -> Body:
    return body.get("metadata") or {}


def carries_our_labels(body: Body) -> bool:
    return (_metadata(body).get("labels") or {}).get(MANAGED_BY_LABEL) == OPERATOR


def has_tiergate_owner(body: Body) -> bool:
    """An ownerReference to a ModelRoute or ApiKeyTier."""
    return any(
        str(ref.get("apiVersion", "")).split("/")[0] == CRD_GROUP
        and ref.get("kind") in _OWNER_KINDS
        for ref in _metadata(body).get("ownerReferences") or []
    )


def _managers(body: Body) -> Iterable[Body]:
    return _metadata(body).get("managedFields") or []


def written_by_us(body: Body) -> bool:
    """Our field manager holds fields of it (outside the status subresource)."""
    return any(
        entry.get("manager") == OPERATOR and not entry.get("subresource")
        for entry in _managers(body)
    )


def is_ours(body: Body) -> bool:
    return (carries_our_labels(body) and has_tiergate_owner(body)) or written_by_us(body)


def may_delete(body: Body) -> bool:
    return carries_our_labels(body) and has_tiergate_owner(body)


def our_update_fields(body: Body) -> bool:
    """Fields our create (an Update operation) left: server-side apply cannot remove them
    until they are handed to our apply manager."""
    return any(
        entry.get("manager") == OPERATOR
        and entry.get("operation") == "Update"
        and not entry.get("subresource")
        for entry in _managers(body)
    )


def describe_holder(body: Body) -> str:
    """Who holds an object, for a message: its owners, else its field managers."""
    owners = [
        f"{ref.get('kind')} {ref.get('name')}"
        for ref in _metadata(body).get("ownerReferences") or []
    ]
    if owners:
        return f"owned by {', '.join(sorted(owners))}"
    managers = sorted(
        {str(entry.get("manager")) for entry in _managers(body) if entry.get("manager")}
    )
    if managers:
        return f"written by {', '.join(managers)}"
    return "not created by tiergate"


def _union(a: Body, b: Body) -> Body:
    """The union of two ``fieldsV1`` sets (nested ``{"f:name": {...}}`` trees)."""
    merged = dict(a)
    for key, value in b.items():
        merged[key] = _union(merged[key], value) if key in merged else value
    return merged


def _ours(entry: Body, operation: str) -> bool:
    return (
        entry.get("manager") == OPERATOR
        and entry.get("operation") == operation
        and not entry.get("subresource")
    )


def fields_handed_to_apply(managed_fields: list[Body]) -> list[Body]:
    """``managedFields`` with the fields our create recorded (an Update entry) moved to our
    apply entry: merged into it when there is one of the same apiVersion, else turned into it."""
    result = [dict(entry) for entry in managed_fields]
    for update in [e for e in result if _ours(e, "Update")]:
        apply = next(
            (
                e
                for e in result
                if _ours(e, "Apply") and e.get("apiVersion") == update.get("apiVersion")
            ),
            None,
        )
        if apply is None:
            update["operation"] = "Apply"
            continue
        apply["fieldsV1"] = _union(apply.get("fieldsV1") or {}, update.get("fieldsV1") or {})
        result.remove(update)
    return result
