"""Chart checks that need no cluster: CRD templates in sync with crds/, a comment on every
value, the operator image pinned, crds/ and crds/examples usable with kustomize."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from tiergate_operator.devcluster import kubectl_binary

from .helpers import CHART, REPO

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
    assert generated.keys() == {"modelroutes.yaml", "apikeytiers.yaml"}
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


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        name, _, version = line.partition("==")
        pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_operator_dockerfile_is_pinned_non_root_and_matches_pyproject() -> None:
    text = (REPO / "operator" / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert len(bases) == 2
    assert all(re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base) for base in bases), bases
    assert re.search(r"^USER 10001:10001", text, flags=re.M)
    assert 'ENTRYPOINT ["python", "-m", "tiergate_operator"]' in text
    assert re.search(r"^COPY operator/requirements\.txt ", text, flags=re.M)
    assert re.search(
        r"pip install --require-hashes --no-deps --only-binary=:all: -r \S*requirements\.txt", text
    ), "the image must install exactly the hash-locked wheels in operator/requirements.txt"
    locked = re.sub(r"\\\n", " ", (REPO / "operator" / "requirements.txt").read_text())
    lines = [line.split("#", 1)[0].split() for line in locked.splitlines()]
    lines = [line for line in lines if line]
    assert all(
        len(options) >= 1 and all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", o) for o in options)
        for _, *options in lines
    ), (
        "every operator/requirements.txt pin needs --hash=sha256:... (scripts/lock-image-requirements.py)"
    )
    installed = _pins([pin for pin, *_ in lines])
    declared = _pins(
        tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    )
    drift = {
        name: (version, installed.get(name))
        for name, version in declared.items()
        if installed.get(name) != version
    }
    assert not drift, f"operator/requirements.txt pins differ from pyproject.toml: {drift}"
    assert "--no-deps" in text, "the image must not resolve dependencies at build time"


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
