from __future__ import annotations

from typing import Any

import pytest

from tiergate_operator.drift import holds

DESIRED: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "gw", "labels": {"a": "1"}},
    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
}


def test_server_defaults_and_metadata_do_not_count_as_drift() -> None:
    live = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "gw",
            "labels": {"a": "1"},
            "uid": "u",
            "resourceVersion": "7",
            "managedFields": [{"manager": "x"}],
        },
        "spec": {
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            "clusterIP": "10.0.0.9",
            "type": "ClusterIP",
        },
        "status": {"loadBalancer": {}},
    }
    assert holds(live, DESIRED)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o["metadata"]["labels"].update(a="2"),
        lambda o: o["metadata"]["labels"].pop("a"),
        lambda o: o["spec"]["ports"][0].update(targetPort=9090),
        lambda o: o["spec"]["ports"].append({"name": "extra", "port": 81}),
        lambda o: o["spec"].pop("ports"),
    ],
    ids=["changed-label", "removed-label", "changed-port", "extra-list-item", "missing-field"],
)
def test_edits_to_fields_we_set_are_drift(mutate: Any) -> None:
    import copy

    live = copy.deepcopy(DESIRED)
    mutate(live)
    assert not holds(live, DESIRED)


def test_a_missing_object_is_drift() -> None:
    assert not holds(None, DESIRED)
