"""What the operator knows of the cluster: the watched objects, per namespace.

Filled by the watch handlers, read by the reconciler. Pure bookkeeping, no I/O.
Secrets are never kept: only the SHA-256 digest of each value that can be a client key,
and for a value that cannot (blank, whitespace, a trailing newline...) why not, so the
operator's memory holds no client key or credential in plain text.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tiergate_contract import client_key_problem, hash_client_key
from tiergate_operator.registry import API_KEY_TIER, MODEL_ROUTE, PROMETHEUS_RULE

__all__ = [
    "NOT_A_KEY",
    "ChildKey",
    "NamespaceState",
    "Store",
    "not_a_key_because",
    "secret_digests",
]

Body = dict[str, Any]
ChildKey = tuple[str, str]  # (kind, name)

# The fields of a custom resource that can change what the operator must do;
# status and managedFields are left out so our own status writes wake nothing.
_RELEVANT_METADATA = ("name", "namespace", "uid", "generation", "deletionTimestamp")


# Stored in place of a digest for a value no client could send as its key: this prefix and
# why (``client_key_problem``). A hex digest never starts with it.
NOT_A_KEY = "not a key: "


def _entry(value: str) -> str:
    problem = client_key_problem(value)
    return NOT_A_KEY + problem if problem else hash_client_key(value)


def secret_digests(data: Mapping[str, str] | None) -> dict[str, str]:
    """``{data key: entry}`` of a Secret's base64 ``data``, decoded first.

    The entry is the SHA-256 digest of a value that can be a client key; for one that
    cannot (``client_key_problem``: empty, whitespace, a trailing newline...) it is
    ``NOT_A_KEY`` and why, so neither the value nor a digest of it is kept. Every data key
    has an entry: upstream credentials and the Redis URL only need the key to exist.
    """
    return {
        key: _entry(base64.b64decode(value).decode("utf-8", errors="replace"))
        for key, value in sorted((data or {}).items())
    }


def not_a_key_because(entry: str) -> str | None:
    """Why a stored Secret entry is not a client key (e.g. "ends with a newline"), or None
    when it is the digest of one."""
    return entry.removeprefix(NOT_A_KEY) if entry.startswith(NOT_A_KEY) else None


def _older(body: Body, stored: Body | None) -> bool:
    """Is ``body`` an older version than ``stored``? resourceVersions are opaque by contract,
    but the API server's are etcd revisions; compare them only when both are numbers."""
    if stored is None:
        return False
    new = body.get("metadata", {}).get("resourceVersion", "")
    old = stored.get("metadata", {}).get("resourceVersion", "")
    return bool(new.isdigit() and old.isdigit() and int(new) < int(old))


def _relevant(body: Body) -> Body:
    metadata = body.get("metadata", {})
    return {
        "metadata": {key: metadata.get(key) for key in _RELEVANT_METADATA},
        "spec": body.get("spec"),
    }


@dataclass
class NamespaceState:
    routes: dict[str, Body] = field(default_factory=dict)
    tiers: dict[str, Body] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    # Secret name -> its metadata.creationTimestamp (RFC 3339), for key age policies.
    secret_created: dict[str, str] = field(default_factory=dict)
    children: dict[ChildKey, Body] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.routes or self.tiers or self.children)


@dataclass
class Store:
    """Every method returns whether the change matters, and then marks the namespace dirty."""

    namespaces: dict[str, NamespaceState] = field(default_factory=dict)
    # Namespaces changed since the reconciler last took them.
    dirty: set[str] = field(default_factory=set)
    # Whether the cluster serves PrometheusRules (their CRD is established).
    prometheus_rules: bool = False

    def namespace(self, name: str) -> NamespaceState:
        return self.namespaces.setdefault(name, NamespaceState())

    def take_dirty(self) -> list[str]:
        taken, self.dirty = sorted(self.dirty), set()
        return taken

    def _mark(self, namespace: str, changed: bool) -> bool:
        if changed:
            self.dirty.add(namespace)
        return changed

    def _put(self, bucket: dict[str, Body], body: Body) -> bool:
        """Store a custom resource; True when its spec or identity changed."""
        name = body["metadata"]["name"]
        previous = bucket.get(name)
        if _older(body, previous):
            return False
        bucket[name] = body
        changed = previous is None or _relevant(previous) != _relevant(body)
        return self._mark(body["metadata"]["namespace"], changed)

    def put_route(self, body: Body) -> bool:
        return self._put(self.namespace(body["metadata"]["namespace"]).routes, body)

    def put_tier(self, body: Body) -> bool:
        return self._put(self.namespace(body["metadata"]["namespace"]).tiers, body)

    def remove_route(self, namespace: str, name: str) -> bool:
        return self._mark(namespace, self.namespace(namespace).routes.pop(name, None) is not None)

    def remove_tier(self, namespace: str, name: str) -> bool:
        return self._mark(namespace, self.namespace(namespace).tiers.pop(name, None) is not None)

    def put_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str] | None,
        created: str | None = None,
    ) -> bool:
        state = self.namespace(namespace)
        digests = secret_digests(data)
        changed = state.secrets.get(name) != digests or state.secret_created.get(name) != created
        state.secrets[name] = digests
        if created is None:
            state.secret_created.pop(name, None)
        else:
            state.secret_created[name] = created
        # Only namespaces that hold tiergate objects care about their Secrets.
        return self._mark(namespace, changed and bool(state.routes or state.tiers))

    def remove_secret(self, namespace: str, name: str) -> bool:
        state = self.namespace(namespace)
        removed = state.secrets.pop(name, None) is not None
        state.secret_created.pop(name, None)
        return self._mark(namespace, removed and bool(state.routes or state.tiers))

    def put_child(self, body: Body) -> bool:
        """A child's change (drift, status) is always checked against what it should be."""
        metadata = body["metadata"]
        children = self.namespace(metadata["namespace"]).children
        if _older(body, children.get((body["kind"], metadata["name"]))):
            return False
        children[(body["kind"], metadata["name"])] = body
        return self._mark(metadata["namespace"], True)

    def record_own_write(self, body: Body) -> None:
        """What the API server answered to one of our writes: newer than the watch may
        have delivered yet, so the next pass does not redo the write. Wakes nothing."""
        metadata = body["metadata"]
        state = self.namespace(metadata["namespace"])
        buckets = {MODEL_ROUTE.kind: state.routes, API_KEY_TIER.kind: state.tiers}
        if body["kind"] in buckets:
            bucket = buckets[body["kind"]]
            if not _older(body, bucket.get(metadata["name"])):
                bucket[metadata["name"]] = body
        elif not _older(body, state.children.get((body["kind"], metadata["name"]))):
            state.children[(body["kind"], metadata["name"])] = body

    def set_prometheus_rules(self, served: bool) -> bool:
        """The PrometheusRule CRD came or went: every namespace with tiers is rebuilt. Gone,
        its objects went with it, so the store forgets them."""
        if served == self.prometheus_rules:
            return False
        self.prometheus_rules = served
        for name, state in self.namespaces.items():
            if not served:
                state.children = {
                    key: body
                    for key, body in state.children.items()
                    if key[0] != PROMETHEUS_RULE.kind
                }
            self._mark(name, bool(state.tiers))
        return True

    def remove_child(self, namespace: str, kind: str, name: str) -> bool:
        return self._mark(
            namespace, self.namespace(namespace).children.pop((kind, name), None) is not None
        )
