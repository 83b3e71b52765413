"""`kubectl get mr,akt` reads well: every printer column shows a scalar, never raw JSON.

The API server prints the first value a column's JSONPath finds, and a string column that
finds an array or object prints it as JSON (what the ModelRoute's GATEWAYS column did with
`.status.gateways`). The static test walks each column's path through the CRD's schema; the
cluster test looks at what `kubectl get` prints for a route served by two gateways.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import REPO
from tests.support.kube import EXAMPLES
from tiergate_devkit.cluster import ControlPlane

CRDS = [REPO / "crds" / f"{name}.yaml" for name in ("modelroutes", "apikeytiers", "spendreports")]
SCALARS = {"string", "integer", "number", "boolean"}


def schema_at(schema: dict[str, Any], json_path: str) -> dict[str, Any]:
    """The schema of what a printer column's simple JSONPath selects."""
    node = schema
    for step in re.findall(r"\.([A-Za-z0-9_]+)|(\[[^\]]*\])", json_path):
        field, index = step
        if index:  # [0], [*] or a filter such as [?(@.type=="Ready")]: into the items
            assert node["type"] == "array", (json_path, node.get("type"))
            node = node["items"]
        else:
            assert node.get("type") == "object", (json_path, field)
            node = node["properties"][field]
    return node


@pytest.mark.parametrize("crd_file", CRDS, ids=lambda p: Path(p).stem)
def test_every_printer_column_selects_a_scalar(crd_file: Path) -> None:
    crd = yaml.safe_load(crd_file.read_text())
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            continue
        selected = schema_at(schema, column["jsonPath"])
        assert selected.get("type") in SCALARS, (column["name"], selected.get("type"))
        if selected["type"] == "string":
            # A time prints as an age ("date"); any other string as itself.
            wanted = "date" if selected.get("format") == "date-time" else "string"
            assert column["type"] == wanted, (column["name"], column["type"])


@pytest.mark.cluster
def test_kubectl_get_shows_the_gateways_of_a_route_in_words(
    control_plane: ControlPlane, namespace: str, tiergate_crds: None
) -> None:
    route = yaml.safe_load((EXAMPLES / "deepseek-chat.yaml").read_text())
    route["metadata"]["namespace"] = namespace
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(route))
    name = route["metadata"]["name"]
    # The status the operator writes for a route two gateways serve (conditions.py).
    status = {
        "status": {
            "observedGeneration": 1,
            "gateways": ["tiergate-enterprise-acme", "tiergate-shared"],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Served",
                    "message": "served by tiergate-enterprise-acme, tiergate-shared",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                    "observedGeneration": 1,
                }
            ],
        }
    }
    control_plane.kubectl(
        "-n",
        namespace,
        "patch",
        "modelroute",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    header, row = control_plane.kubectl("-n", namespace, "get", "mr", name).stdout.splitlines()
    assert header.split()[:6] == ["NAME", "MODEL", "CATALOG", "READY", "REASON", "MESSAGE"], header
    assert "served by tiergate-enterprise-acme, tiergate-shared" in row, row
    assert "[" not in row and "{" not in row, row
