"""``tiergate catalog import``, ``cost`` and ``render`` for catalogs: from a saved /v1/models
answer and a price CSV to the manifest, its prices, and what the gateways get."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tests.support.manifests import store_of, translate_namespace
from tiergate_cli.credentials import credential_refs
from tiergate_cli.targets import local_upstream_ports, override_upstreams
from tiergate_operator.models import ModelRoute

from .conftest import Result

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "crds" / "examples-catalog"
GOLDEN = ROOT / "tests" / "data" / "render" / "catalog" / "expected"
IMPORT = (
    "catalog",
    "import",
    str(EXAMPLE / "source" / "models.json"),
    "--prices",
    str(EXAMPLE / "source" / "prices.csv"),
    "--name",
    "aggregator",
    "--target",
    "aggregator=http://127.0.0.1:9901/v1@aggregator-credentials/api-key",
    "--target",
    "backup=http://127.0.0.1:9903/v1@aggregator-credentials/backup-key",
    "--pattern",
    "deepseek-ai/*",
    "--default-price",
    "0.5/2",
)


def test_the_example_catalog_is_what_import_makes_of_its_sources(
    tiergate: Callable[..., Result],
) -> None:
    result = tiergate(*IMPORT)
    assert result.code == 0, result.err
    assert result.out == (EXAMPLE / "aggregator.yaml").read_text()
    route = ModelRoute.model_validate(yaml.safe_load_all(result.out).__next__())
    assert route.spec.catalog is not None and route.spec.catalog.models is not None
    assert len(route.spec.catalog.models) == 184
    assert [(t.name, t.priority) for t in route.spec.targets] == [("aggregator", 0), ("backup", 1)]


def _files(tmp_path: Path, models: object, csv: str) -> tuple[str, str]:
    (tmp_path / "models.json").write_text(json.dumps(models))
    (tmp_path / "prices.csv").write_text(csv)
    return str(tmp_path / "models.json"), str(tmp_path / "prices.csv")


def _import(tiergate: Callable[..., Result], models: str, prices: str, *extra: str) -> Result:
    return tiergate(
        "catalog", "import", models, "--prices", prices, "--name", "agg",
        "--target", "a=http://127.0.0.1:9901/v1", *extra,
    )  # fmt: skip


def test_upstream_names_and_extra_price_rows(
    tiergate: Callable[..., Result], tmp_path: Path
) -> None:
    models, prices = _files(
        tmp_path,
        [{"id": "b/two"}, {"id": "a/one"}],  # the bare list some aggregators answer
        "Model,inputPerMillion,outputPerMillion,upstreamModel\n"
        "a/one,0.1,0.2,\nb/two,1,2,vendor/two-large\nc/gone,3,3,\n",
    )
    result = _import(tiergate, models, prices)
    assert result.code == 0, result.err
    (manifest,) = [d for d in yaml.safe_load_all(result.out) if d]
    assert manifest["spec"]["catalog"]["models"] == [
        {"model": "a/one", "pricing": {"inputPerMillion": "0.1", "outputPerMillion": "0.2"}},
        {
            "model": "b/two",
            "upstreamModel": "vendor/two-large",
            "pricing": {"inputPerMillion": "1", "outputPerMillion": "2"},
        },
    ]
    assert "1 priced models are not in" in result.err and "c/gone" in result.err


@pytest.mark.parametrize(
    ("models", "csv", "extra", "message"),
    [
        ({"data": [{"id": "a"}, {"id": "b"}]}, "model,input,output\na,1,1\n", (),
         "no price for 1 models: b (add rows to the CSV, or price them all with --default-price"),
        ({"data": [{"id": "a"}]}, "model,input,output\na,1e-3,1\n", (),
         "prices.csv:2: input price '1e-3' is not a decimal such as 0.25"),
        ({"data": [{"id": "a"}]}, "name,input,output\na,1,1\n", (),
         "prices.csv:1: the header row needs columns model, input and output (missing model)"),
        ({"data": [{"name": "a"}]}, "model,input,output\n", (), "models.json: data[0] has no string 'id'"),
        ({"data": [{"id": "has space"}]}, "model,input,output\n", (),
         "models.json: not a model name a client can send: has space"),
        ({"data": [{"id": "a"}, {"id": "a"}]}, "model,input,output\na,1,1\n", (),
         "models.json: listed more than once: a"),
        ({"data": [{"id": "a"}]}, "model,input,output\na,1,1\n", ("--pattern", "a*b*"),
         "a pattern is a model-name prefix ending in a single *"),
        ({"data": [{"id": "a"}]}, "model,input,output\na,1,1\n", ("--default-price", "1"),
         "--default-price '1': expected INPUT/OUTPUT"),
    ],
)  # fmt: skip
def test_bad_input_names_the_problem(
    tiergate: Callable[..., Result],
    tmp_path: Path,
    models: object,
    csv: str,
    extra: tuple[str, ...],
    message: str,
) -> None:
    result = _import(tiergate, *_files(tmp_path, models, csv), *extra)
    assert result.code == 2
    assert message in result.err
    assert result.out == ""


def test_a_json_that_is_no_models_answer_is_refused(
    tiergate: Callable[..., Result], tmp_path: Path
) -> None:
    (tmp_path / "models.json").write_text('{"data": [}')
    (tmp_path / "prices.csv").write_text("model,input,output\n")
    result = _import(tiergate, str(tmp_path / "models.json"), str(tmp_path / "prices.csv"))
    assert result.code == 2 and "models.json:1: not JSON" in result.err


def test_cost_prints_each_model_and_the_blend_of_a_mix(tiergate: Callable[..., Result]) -> None:
    mix = "--mix", "01-ai/Yi-1.5-1.5B-Instruct=75,deepseek-ai/unlisted-model=25"
    result = tiergate("cost", "-f", str(EXAMPLE), "--tokens", "1M", *mix, "-o", "json")
    assert result.code == 0, result.err
    (route,) = json.loads(result.out)["routes"]
    rows = {row["name"]: row for row in route["targets"]}
    assert len(rows) == 184 + 1 + 1 + 1  # listed, the mixed model a pattern passes, pattern, blend
    assert rows["01-ai/Yi-1.5-1.5B-Instruct"]["perMillion"] == "0.02"
    assert rows["deepseek-ai/unlisted-model"]["serves"] == "pattern deepseek-ai/*"
    assert rows["deepseek-ai/*"]["perMillion"] == "0.5"  # the default price
    # 75% at 0.02 and 25% at 0.5 (every token at the input price: --output-share 0).
    assert Decimal(rows["= blend"]["perMillion"]) == Decimal("0.14")
    text = tiergate("cost", "-f", str(EXAMPLE), "--tokens", "1M", *mix, "--output-share", "50")
    assert "ModelRoute default/aggregator (catalog: 184 models, 1 pattern):" in text.out
    blend = next(line for line in text.out.splitlines() if line.startswith("= blend"))
    # 75% x (0.02 + 0.08) / 2 + 25% x (0.5 + 2) / 2 = 0.35
    assert blend.split()[-2:] == ["0.35", "$0.35"]


def test_cost_refuses_a_mix_of_models_no_catalog_serves(tiergate: Callable[..., Result]) -> None:
    result = tiergate("cost", "-f", str(EXAMPLE), "--mix", "nobody/model=100")
    assert result.code == 2
    assert "--mix names models no catalog serves: nobody/model" in result.err


def test_render_shows_what_the_gateway_gets(tiergate: Callable[..., Result]) -> None:
    result = tiergate("render", "-f", str(EXAMPLE), "-n", "demo")
    assert result.code == 0, result.err
    rendered = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.out) if d}
    golden = yaml.safe_load((GOLDEN / "configmap-tiergate-shared.yaml").read_text())
    assert rendered["ConfigMap", "tiergate-shared"]["data"] == golden["data"]
    config = json.loads(golden["data"]["config.json"])
    assert [c["name"] for c in config["catalogs"]] == ["aggregator"]
    assert len(config["catalogs"][0]["models"]) == 184
    assert {t["name"]: t["catalogs"] for t in config["tiers"]} == {
        "interns": [
            {"name": "aggregator", "only": ["Qwen/*", "deepseek-ai/DeepSeek-V3-72B-Instruct"]}
        ],
        "lab": [{"name": "aggregator"}],
    }


def test_tiergate_gateway_finds_a_catalogs_upstreams_and_credentials() -> None:
    (plan,) = translate_namespace(store_of(EXAMPLE)).plans
    assert local_upstream_ports(plan.config) == {"aggregator": 9901, "backup": 9903}
    assert [(r.secret, r.key) for r in credential_refs(plan.config)] == [
        ("aggregator-credentials", "api-key"),
        ("aggregator-credentials", "backup-key"),
    ]
    moved = override_upstreams(plan.config, {"aggregator/backup": "http://127.0.0.1:1/v1"})
    assert [t.base_url for t in moved.catalogs[0].targets] == [
        "http://127.0.0.1:9901/v1",
        "http://127.0.0.1:1/v1",
    ]
