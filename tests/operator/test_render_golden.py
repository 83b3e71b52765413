"""Golden files: tests/data/render/<case>/input (+ previous) -> expected manifests.

Regenerate with ``TIERGATE_REGENERATE_GOLDEN=1 pytest tests/operator/test_render_golden.py``
and review the diff; see tests/data/render/README.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.manifests import store_of, translate_namespace
from tiergate_contract import GatewayConfig
from tiergate_operator.render import render
from tiergate_operator.settings import load_operator_settings
from tiergate_operator.slo import render_slo_rules
from tiergate_operator.translate import Translation

CASES = Path(__file__).parents[1] / "data" / "render"
NAMESPACE = "demo"
REGENERATE = os.environ.get("TIERGATE_REGENERATE_GOLDEN") == "1"


def _translate(case: Path, previous: dict[str, GatewayConfig]) -> Translation:
    return translate_namespace(store_of(case, NAMESPACE), NAMESPACE, previous)


def outputs(case: Path) -> dict[str, Any]:
    """File name -> content of everything a case produces."""
    previous = _translate(case / "previous", {}).configs if (case / "previous").is_dir() else {}
    settings_file = case / "settings.yaml"
    env = yaml.safe_load(settings_file.read_text()) if settings_file.exists() else {}
    settings = load_operator_settings(env)
    translation = _translate(case / "input", previous)
    files: dict[str, Any] = {
        f"{m['kind'].lower()}-{m['metadata']['name']}.yaml": m
        for plan in translation.plans
        for m in (*render(plan, settings), *render_slo_rules(plan, settings))
    }
    files["status.yaml"] = {
        "routeProblems": {n: vars(p) for n, p in sorted(translation.route_problems.items())},
        "tierProblems": {n: vars(p) for n, p in sorted(translation.tier_problems.items())},
        "routeGateways": {n: list(g) for n, g in sorted(translation.route_gateways.items())},
        "tierGateways": dict(sorted(translation.tier_gateways.items())),
    }
    return files


def dump(content: Any) -> str:
    return yaml.safe_dump(content, sort_keys=True, default_flow_style=False, width=120)


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if (p / "input").is_dir()))
def test_golden(case: str) -> None:
    produced = {name: dump(content) for name, content in outputs(CASES / case).items()}
    expected_dir = CASES / case / "expected"
    if REGENERATE:
        expected_dir.mkdir(exist_ok=True)
        for stale in expected_dir.glob("*.yaml"):
            stale.unlink()
        for name, text in produced.items():
            (expected_dir / name).write_text(text)
    expected = {p.name: p.read_text() for p in sorted(expected_dir.glob("*.yaml"))}
    assert sorted(produced) == sorted(expected), (
        "files differ: regenerate and review (see README.md)"
    )
    for name in produced:
        assert produced[name] == expected[name], f"{case}/expected/{name} differs"
