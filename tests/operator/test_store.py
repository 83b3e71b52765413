from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from tiergate_contract import hash_client_key
from tiergate_operator.registry import MODEL_ROUTE
from tiergate_operator.store import Store, not_a_key_because, secret_digests

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


def test_a_secrets_creation_time_is_kept_for_key_age_and_a_new_one_matters() -> None:
    store = Store()
    store.put_route(copy.deepcopy(ROUTE))
    data = {"k": base64.b64encode(b"tg-key").decode()}
    store.put_secret("ns", "keys", data, "2026-01-01T00:00:00Z")
    store.take_dirty()
    assert store.namespace("ns").secret_created == {"keys": "2026-01-01T00:00:00Z"}
    assert not store.put_secret("ns", "keys", data, "2026-01-01T00:00:00Z")
    # Deleted and created again with the same value: younger, so its age policy restarts.
    assert store.put_secret("ns", "keys", data, "2026-06-01T00:00:00Z")
    assert store.remove_secret("ns", "keys")
    assert store.namespace("ns").secret_created == {}


def _encoded(**values: bytes) -> dict[str, str]:
    return {key: base64.b64encode(value).decode() for key, value in values.items()}


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"", "is empty"),
        (b"   ", "is only whitespace"),
        (b"\n", "is only whitespace"),
        (b"tg-key-from-file\n", "ends with a newline"),
        (b"tg-key-from-windows\r\n", "ends with a newline"),
        (b" tg-key-leading-space", "starts or ends with whitespace"),
        (b"tg-key-trailing-tab\t", "starts or ends with whitespace"),
        (b"tg-key with-space", "holds a character other than visible ASCII"),
        (b"tg-\xff-not-utf8", "holds a character other than visible ASCII"),
    ],
)
def test_a_value_that_can_be_no_client_key_is_kept_as_why_not_never_as_a_digest(
    value: bytes, why: str
) -> None:
    (entry,) = secret_digests(_encoded(k=value)).values()
    found = not_a_key_because(entry)
    assert found is not None and found.startswith(why)
    assert entry != hash_client_key(value.decode("utf-8", errors="replace"))
    if value.strip():
        assert value.strip().decode(errors="replace") not in entry


def test_good_and_bad_values_of_one_secret_each_get_their_entry() -> None:
    entries = secret_digests(_encoded(good=b"tg-good-key", newline=b"tg-file-key\n", blank=b""))
    assert entries["good"] == hash_client_key("tg-good-key")
    assert not_a_key_because(entries["good"]) is None
    assert not_a_key_because(entries["newline"]) == "ends with a newline"
    assert not_a_key_because(entries["blank"]) == "is empty"
    assert "tg-file-key" not in repr(entries)


def test_a_secret_whose_bad_value_changes_into_a_good_one_wakes_the_reconciler() -> None:
    store = Store()
    store.put_route(copy.deepcopy(ROUTE))
    assert store.put_secret("ns", "keys", _encoded(k=b"tg-key\n"))
    assert store.put_secret("ns", "keys", _encoded(k=b"tg-key"))
    assert store.namespace("ns").secrets["keys"] == {"k": hash_client_key("tg-key")}


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
