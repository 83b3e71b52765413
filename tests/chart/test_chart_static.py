"""Chart checks that need no cluster: CRD templates in sync with crds/, a comment on every
value, the operator image pinned, crds/ and crds/examples usable with kustomize."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.chart import CHART, REPO
from tiergate_cli.kubectl import kubectl_binary

SYNC = REPO / "scripts" / "sync-chart-crds.py"
TEMPLATES = CHART / "templates" / "crds"


def sync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SYNC), *args], capture_output=True, text=True, check=False
    )


def test_crd_templates_are_generated_from_crds(tmp_path: Path) -> None:
    result = sync("--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    generated = {p.name: p.read_text() for p in tmp_path.glob("*.yaml")}
    committed = {p.name: p.read_text() for p in TEMPLATES.glob("*.yaml")}
    assert generated.keys() == {"modelroutes.yaml", "apikeytiers.yaml", "spendreports.yaml"}
    stale = [name for name in generated if generated[name] != committed.get(name)]
    assert generated.keys() == committed.keys() and not stale, (
        f"charts/tiergate/templates/crds is out of date with crds/ ({stale or 'file set'}): "
        "run `make chart-crds`"
    )


def test_sync_check_names_a_drifted_crd(tmp_path: Path) -> None:
    crds = tmp_path / "crds"
    shutil.copytree(REPO / "crds", crds, ignore=shutil.ignore_patterns("examples"))
    source = crds / "modelroutes.yaml"
    source.write_text(
        source.read_text().replace(
            "The model alias clients send.", "The model alias clients send (changed)."
        )
    )
    result = sync("--crds", str(crds), "--check")
    assert result.returncode == 1
    assert "modelroutes.yaml is out of date" in result.stderr
    assert "apikeytiers" not in result.stderr


def test_sync_refuses_a_file_that_is_not_a_crd(tmp_path: Path) -> None:
    (tmp_path / "thing.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    result = sync("--crds", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "thing.yaml: kind is 'ConfigMap', not CustomResourceDefinition" in result.stderr


def _schema_node(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _uncommented(
    schema: dict[str, Any],
    node: yaml.MappingNode,
    schema_node: dict[str, Any],
    lines: list[str],
    path: str,
) -> list[str]:
    """Keys of closed (additionalProperties: false) mappings without a comment line above."""
    missing = []
    for key, value in node.value:
        where = f"{path}.{key.value}".lstrip(".")
        above = lines[key.start_mark.line - 1].strip() if key.start_mark.line else ""
        if not above.startswith("#"):
            missing.append(f"{where} (line {key.start_mark.line + 1})")
        child = _schema_node(schema, schema_node["properties"][key.value])
        if (
            isinstance(value, yaml.MappingNode)
            and child.get("additionalProperties") is False
            and child is not schema["$defs"].get("resourceList")
            and child is not schema["$defs"].get("gatewayResourceList")
        ):
            missing += _uncommented(schema, value, child, lines, where)
    return missing


def test_every_value_has_a_comment_and_a_closed_schema() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    text = (CHART / "values.yaml").read_text()
    root = yaml.compose(text)
    assert isinstance(root, yaml.MappingNode)
    assert schema["additionalProperties"] is False
    missing = _uncommented(schema, root, schema, text.splitlines(), "")
    assert not missing, f"values without a comment directly above them: {missing}"

    def closed(node: Any, path: str) -> list[str]:
        if isinstance(node, dict):
            found = []
            if (
                node.get("type") == "object"
                and "properties" in node
                and node.get("additionalProperties") is not False
            ):
                found.append(path)
            for key, child in node.items():
                found += closed(child, f"{path}/{key}")
            return found
        return []

    assert closed(schema, "") == [], "every object with properties must forbid unknown keys"


def kustomize(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl_binary(), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {path}: {result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_crds_and_examples_build_with_kustomize() -> None:
    assert (REPO / "crds" / "examples" / "kustomization.yaml").exists(), (
        "crds/examples/kustomization.yaml is missing: `kubectl apply -k crds/examples` needs it"
    )
    crds = kustomize(REPO / "crds")
    assert sorted(d["metadata"]["name"] for d in crds) == [
        "apikeytiers.tiergate.dev",
        "modelroutes.tiergate.dev",
        "spendreports.tiergate.dev",
    ]
    examples = kustomize(REPO / "crds" / "examples")
    listed = {p.name for p in (REPO / "crds" / "examples").glob("*.yaml")} - {"kustomization.yaml"}
    kinds = sorted({d["kind"] for d in examples})
    assert kinds == ["ApiKeyTier", "ModelRoute", "Secret"], kinds
    assert all("namespace" not in d["metadata"] for d in examples), (
        "examples must stay namespace-free so `kubectl -n X apply -k` places them"
    )
    resources = yaml.safe_load((REPO / "crds" / "examples" / "kustomization.yaml").read_text())
    assert set(resources["resources"]) == listed, "every example must be in the kustomization"
