"""Does a live object still hold what we would apply? (pure)

The API server adds defaults and metadata to what we apply, so a live object
matches when every field we set is present with the same value; extra fields
are ignored. Lists match element by element and must have the same length.
"""

from __future__ import annotations

from typing import Any

__all__ = ["holds"]

# Metadata the server owns or that we never set; comparing it would always drift.
_IGNORED_METADATA = frozenset(
    {"managedFields", "resourceVersion", "uid", "creationTimestamp", "generation"}
)


def holds(live: Any, desired: Any, *, path: tuple[str, ...] = ()) -> bool:
    """True when ``live`` contains everything in ``desired``."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        for key, value in desired.items():
            if path == ("metadata",) and key in _IGNORED_METADATA:
                continue
            if key not in live or not holds(live[key], value, path=(*path, str(key))):
                return False
        return True
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(holds(a, b, path=(*path, "[]")) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)
