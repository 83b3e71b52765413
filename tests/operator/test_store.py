from __future__ import annotations

import base64
import copy
from typing import Any

from tiergate_contract import hash_client_key
from tiergate_operator.registry import MODEL_ROUTE
from tiergate_operator.store import Store

ROUTE: dict[str, Any] = {
    **MODEL_ROUTE.type_meta(),
    "metadata": {"name": "r", "namespace": "ns", "uid": "u1", "generation": 1},
    "spec": {"model": "m"},
}


def test_status_only_changes_do_not_wake_the_reconciler() -> None:
    store = Store()
    assert store.put_route(copy.deepcopy(ROUTE))
    with_status = copy.deepcopy(ROUTE) | {"status": {"conditions": [{"type": "Ready"}]}}
    assert not store.put_route(with_status)
    assert store.namespace("ns").routes["r"]["status"]["conditions"][0]["type"] == "Ready"
    new_spec = copy.deepcopy(ROUTE)
    new_spec["metadata"]["generation"] = 2
    new_spec["spec"]["model"] = "other"
    assert store.put_route(new_spec)


def test_secrets_are_kept_as_digests_only() -> None:
    store = Store()
    store.put_route(copy.deepcopy(ROUTE))
    store.take_dirty()
    data = {"key-a": base64.b64encode(b"sk-client-secret").decode()}
    assert store.put_secret("ns", "keys", data)
    assert store.namespace("ns").secrets["keys"] == {"key-a": hash_client_key("sk-client-secret")}
    assert "sk-client-secret" not in repr(store)
    assert store.take_dirty() == ["ns"]
    assert not store.put_secret("ns", "keys", data)
    assert store.dirty == set()
    assert store.remove_secret("ns", "keys")
    assert not store.remove_secret("ns", "keys")


def test_secrets_of_namespaces_without_tiergate_objects_wake_nothing() -> None:
    store = Store()
    assert not store.put_secret("elsewhere", "s", {"k": base64.b64encode(b"v").decode()})
    assert store.dirty == set()


def test_an_older_watch_event_never_replaces_what_our_own_write_returned() -> None:
    store = Store()
    store.put_route(
        copy.deepcopy(ROUTE) | {"metadata": ROUTE["metadata"] | {"resourceVersion": "10"}}
    )
    ours = copy.deepcopy(ROUTE)
    ours["metadata"]["resourceVersion"] = "12"
    ours["status"] = {"observedGeneration": 1}
    store.record_own_write(ours)
    stale = copy.deepcopy(ROUTE)
    stale["metadata"]["resourceVersion"] = "11"
    assert not store.put_route(stale)
    assert store.namespace("ns").routes["r"]["status"] == {"observedGeneration": 1}
