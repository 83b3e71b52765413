"""The CRDs under crds/ are the source of truth; the pydantic models must mirror them.

Both schemas are walked together: every property, required-ness, type, enum, bound,
pattern and default must agree, so a field added or changed on one side only fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from tiergate_operator.models import (
    ApiKeyTierSpec,
    ApiKeyTierStatus,
    ModelRouteSpec,
    ModelRouteStatus,
)

CRDS = Path(__file__).parents[2] / "crds"
Schema = dict[str, Any]

_COMPARED_KEYWORDS = (
    "type",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "default",
)


def crd_schema(filename: str) -> Schema:
    crd = yaml.safe_load((CRDS / filename).read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def _resolve(node: Schema, definitions: Schema) -> Schema:
    """Follow ``$ref`` and drop the ``null`` branch pydantic adds for optional fields."""
    if "$ref" in node:
        return _resolve(definitions[node["$ref"].rsplit("/", 1)[-1]], definitions)
    branches = [b for b in node.get("anyOf", []) if b.get("type") != "null"]
    if "anyOf" in node and len(branches) == 1:
        merged = {k: v for k, v in node.items() if k != "anyOf"}
        merged.update(_resolve(branches[0], definitions))
        if merged.get("default", ...) is None:
            del merged["default"]
        return merged
    if node.get("default", ...) is None:
        node = {k: v for k, v in node.items() if k != "default"}
    return node


def _int_or_string(node: Schema) -> Schema:
    """Reduce pydantic's ``int | constrained str`` to the CRD's int-or-string form."""
    branches = [b for b in node["anyOf"] if b["type"] != "null"]
    assert {b["type"] for b in branches} == {"integer", "string"}, node
    (string,) = [b for b in branches if b["type"] == "string"]
    return {key: string[key] for key in ("pattern", "maxLength") if key in string}


def diff(crd: Schema, model: Schema, definitions: Schema, path: str = "") -> list[str]:
    model = _resolve(model, definitions)
    if crd.get("x-kubernetes-int-or-string"):
        wanted = {k: crd[k] for k in ("pattern", "maxLength") if k in crd}
        got = _int_or_string(model)
        return [] if wanted == got else [f"{path}: int-or-string {wanted} != {got}"]
    problems = [
        f"{path}: {keyword} {crd.get(keyword)!r} != {model.get(keyword)!r}"
        for keyword in _COMPARED_KEYWORDS
        if crd.get(keyword) != model.get(keyword)
    ]
    if set(crd.get("enum", [])) != set(model.get("enum", [])):
        problems.append(f"{path}: enum {crd.get('enum')} != {model.get('enum')}")
    if crd.get("type") == "array":
        problems += diff(crd["items"], model["items"], definitions, f"{path}[]")
    if crd.get("type") == "object":
        crd_props, model_props = crd.get("properties", {}), model.get("properties", {})
        for name in sorted(set(crd_props) ^ set(model_props)):
            side = "the CRD" if name in crd_props else "the model"
            problems.append(f"{path}.{name}: only in {side}")
        for name in sorted(set(crd_props) & set(model_props)):
            problems += diff(crd_props[name], model_props[name], definitions, f"{path}.{name}")
        if set(crd.get("required", [])) != set(model.get("required", [])):
            problems.append(f"{path}: required {crd.get('required')} != {model.get('required')}")
    return problems


def model_diff(crd: Schema, model: type[BaseModel]) -> list[str]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return diff(crd, schema, schema.get("$defs", {}))


@pytest.mark.parametrize(
    ("filename", "part", "model"),
    [
        ("modelroutes.yaml", "spec", ModelRouteSpec),
        ("modelroutes.yaml", "status", ModelRouteStatus),
        ("apikeytiers.yaml", "spec", ApiKeyTierSpec),
        ("apikeytiers.yaml", "status", ApiKeyTierStatus),
    ],
)
def test_model_mirrors_crd(filename: str, part: str, model: type[BaseModel]) -> None:
    assert model_diff(crd_schema(filename)["properties"][part], model) == []


def test_drift_is_detected() -> None:
    crd = crd_schema("modelroutes.yaml")["properties"]["spec"]
    crd["properties"]["targets"]["items"]["properties"]["class"]["enum"].append("Economy")
    crd["properties"]["targets"]["items"]["required"].append("weight")
    crd["properties"]["timeouts"]["properties"]["idleSeconds"] = {"type": "integer"}
    del crd["properties"]["failover"]["properties"]["onTimeout"]
    assert model_diff(crd, ModelRouteSpec) == [
        ".failover.onTimeout: only in the model",
        ".targets[].class: enum ['Standard', 'Premium', 'Economy'] != ['Standard', 'Premium']",
        ".targets[]: required ['name', 'baseURL', 'weight'] != ['name', 'baseURL']",
        ".timeouts.idleSeconds: only in the CRD",
    ]


def _walk(node: Schema, path: str) -> list[tuple[str, Schema]]:
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found += _walk(child, f"{path}.{name}")
    if "items" in node:
        found += _walk(node["items"], f"{path}[]")
    return found


@pytest.mark.parametrize("filename", ["modelroutes.yaml", "apikeytiers.yaml"])
def test_every_field_is_described_and_bounded(filename: str) -> None:
    nodes = _walk(crd_schema(filename), "")
    undescribed = [
        path
        for path, node in nodes
        if path
        and not path.endswith("[]")
        and path not in (".metadata",)
        and not node.get("description")
    ]
    unbounded_lists = [
        path for path, node in nodes if node.get("type") == "array" and "maxItems" not in node
    ]
    unbounded_strings = [
        path
        for path, node in nodes
        if node.get("type") == "string"
        and "maxLength" not in node
        and "enum" not in node
        and node.get("format") != "date-time"
        and path not in (".apiVersion", ".kind")
    ]
    floats = [path for path, node in nodes if node.get("type") == "number"]
    assert (undescribed, unbounded_lists, unbounded_strings, floats) == ([], [], [], [])


@pytest.mark.parametrize(
    ("filename", "short_name"), [("modelroutes.yaml", "mr"), ("apikeytiers.yaml", "akt")]
)
def test_crd_names_and_columns(filename: str, short_name: str) -> None:
    crd = yaml.safe_load((CRDS / filename).read_text())
    assert crd["spec"]["names"]["shortNames"] == [short_name]
    assert crd["spec"]["names"]["categories"] == ["tiergate"]
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    paths = [column["jsonPath"] for column in version["additionalPrinterColumns"]]
    assert '.status.conditions[?(@.type=="Ready")].status' in paths
