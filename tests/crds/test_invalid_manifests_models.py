"""Without a cluster: the pydantic models reject every bad manifest too."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from tests.crds.test_credit_grants import GRANTS_APPEND_ONLY
from tests.support.invalid_manifests import InvalidManifest, invalid_manifests
from tiergate_operator.models import ApiKeyTier, ModelRoute

CRDS = Path(__file__).parents[2] / "crds"
MODELS: dict[str, type[BaseModel]] = {"ModelRoute": ModelRoute, "ApiKeyTier": ApiKeyTier}


def test_the_folder_covers_every_cel_rule() -> None:
    rules = {m.model_message for m in invalid_manifests() if m.model_message}
    assert len(invalid_manifests()) >= 12
    assert len(rules) >= 12


@pytest.mark.parametrize("manifest", invalid_manifests(), ids=lambda m: m.path.stem)
def test_models_reject(manifest: InvalidManifest) -> None:
    body = manifest.body
    with pytest.raises(ValidationError) as error:
        MODELS[body["kind"]].model_validate(body)
    if manifest.model_message:
        assert manifest.model_message in str(error.value)


def _cel_messages(node: object, transition: bool = False) -> list[str]:
    """The messages of the CEL rules under ``node``: the rules that judge one manifest, or
    with ``transition`` the ones that judge an update (they read ``oldSelf``)."""
    if isinstance(node, dict):
        own = [
            rule["message"]
            for rule in node.get("x-kubernetes-validations", [])
            if ("oldSelf" in rule["rule"]) == transition
        ]
        return own + [m for value in node.values() for m in _cel_messages(value, transition)]
    if isinstance(node, list):
        return [m for value in node for m in _cel_messages(value, transition)]
    return []


@pytest.mark.parametrize("filename", ["modelroutes.yaml", "apikeytiers.yaml"])
def test_every_cel_rule_has_a_bad_manifest(filename: str) -> None:
    crd = yaml.safe_load((CRDS / filename).read_text())
    expected = " ".join(m.server_message for m in invalid_manifests())
    assert [m for m in _cel_messages(crd) if m not in expected] == []


def test_every_transition_rule_is_tested_on_the_api_server() -> None:
    """An update rule needs two manifests: tests/crds/test_credit_grants.py applies them."""
    crd = yaml.safe_load((CRDS / "apikeytiers.yaml").read_text())
    assert _cel_messages(crd, transition=True) == [GRANTS_APPEND_ONLY]
