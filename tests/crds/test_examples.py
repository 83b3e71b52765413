"""Every example under crds/examples parses with the models and stays local."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.kube import EXAMPLES
from tiergate_cli.manifests import load_manifests
from tiergate_operator.models import ApiKeyTier, ModelRoute

MODELS = {"ModelRoute": ModelRoute, "ApiKeyTier": ApiKeyTier}


def example_documents() -> list[dict[str, Any]]:
    return [document.body for _, document in load_manifests(EXAMPLES).documents]


def test_kustomization_lists_every_example() -> None:
    listed = yaml.safe_load((EXAMPLES / "kustomization.yaml").read_text())["resources"]
    on_disk = sorted(p.name for p in EXAMPLES.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk


@pytest.mark.parametrize(
    "document", example_documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_example_parses(document: dict[str, Any]) -> None:
    if document["kind"] == "Secret":
        assert document["type"] == "Opaque"
        assert all("fake" in value for value in document["stringData"].values())
        return
    model = MODELS[document["kind"]].model_validate(document)
    assert model.model_dump(mode="json", exclude_unset=True)["spec"] == document["spec"]


def test_example_upstreams_are_local() -> None:
    routes = [
        ModelRoute.model_validate(d) for d in example_documents() if d["kind"] == "ModelRoute"
    ]
    hosts = {urlsplit(t.base_url).hostname for route in routes for t in route.spec.targets}
    assert hosts == {"127.0.0.1"}


def test_examples_cover_the_seed_setup() -> None:
    documents = {(d["kind"], d["metadata"]["name"]): d for d in example_documents()}
    route = ModelRoute.model_validate(documents["ModelRoute", "deepseek-chat"])
    primary = route.spec.targets[0]
    assert (primary.weight, primary.pricing and primary.pricing.input_per_million) == (80, "0.25")
    assert {t.priority for t in route.spec.targets} == {0, 1}
    assert "Premium" in {t.request_class for t in route.spec.targets}
    startup = ApiKeyTier.model_validate(documents["ApiKeyTier", "startup"])
    assert startup.spec.isolation == "Shared"
    assert startup.spec.limits
    assert startup.spec.limits.requests_per_minute == 50
    # The seed's 100 free credits.
    assert startup.spec.credits and startup.spec.credits.grants
    assert [(g.id, g.amount_usd) for g in startup.spec.credits.grants] == [("welcome", "100")]
    acme = ApiKeyTier.model_validate(documents["ApiKeyTier", "enterprise-acme"])
    assert (acme.spec.isolation, acme.spec.replicas) == ("Dedicated", 3)
    assert acme.spec.upstream
    assert acme.spec.upstream.model_prefix == "Pro/"
