"""Gateway config size: a model per ModelRoute against one catalog route (prints a table).

    .venv/bin/python bench/operator/catalog_size.py [--models 184,2000] [--tiers 90]

For each model count, one shared gateway serving every tier, built by the operator's own
translation (pure, no cluster) from three namespaces of the same models:

- routes:   one ModelRoute per model (one target, a price), tiers allowing every route: each
            tier lists every alias, so the config grows with models x tiers;
- catalog:  one catalog ModelRoute listing the models, tiers allowing it whole;
- narrowed: the same catalog, each tier narrowed to two patterns and one model.

Columns: the config's JSON bytes; what the ConfigMap stores (inline JSON up to 256 KiB, else
gzip + base64 in binaryData) and its share of the 1 MiB a ConfigMap may hold; the JSON's gzip
size whatever its size (inline configs are stored uncompressed); the bytes a tier adds; the operator's translate time and the gateway's parse + compile time (best of 3).
Goal (issue 16): a 184-model catalog for 90 tiers within 10% of 1 MiB.
"""

from __future__ import annotations

import argparse
import gzip
import time
from collections.abc import Callable
from typing import Any

from tiergate_contract import GatewayConfig, canonical_json, configmap_payload, hash_client_key
from tiergate_gateway.config import compile_config, parse_config
from tiergate_operator.translate import translate

CONFIGMAP_LIMIT = 1024 * 1024
VENDORS = ("deepseek-ai", "Qwen", "meta-llama", "mistralai", "google", "THUDM", "01-ai")
TARGET = {"name": "aggregator", "baseURL": "https://api.aggregator.example/v1"}


def model_names(count: int) -> list[str]:
    return [f"{VENDORS[i % len(VENDORS)]}/model-{i:04d}-Instruct" for i in range(count)]


def price(i: int) -> dict[str, str]:
    return {"inputPerMillion": f"0.{i % 90 + 10}", "outputPerMillion": f"1.{i % 90 + 10}"}


def per_model_routes(models: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "kind": "ModelRoute",
            "metadata": {"name": f"route-{i}"},
            "spec": {
                "model": model,
                "targets": [TARGET | {"upstreamModel": model, "pricing": price(i)}],
            },
        }
        for i, model in enumerate(models)
    ]


def catalog_route(models: list[str]) -> list[dict[str, Any]]:
    entries = [{"model": m, "pricing": price(i)} for i, m in enumerate(models)]
    return [
        {
            "kind": "ModelRoute",
            "metadata": {"name": "aggregator"},
            "spec": {
                "catalog": {"models": entries, "patterns": [{"pattern": "deepseek-ai/*"}]}
                | {"defaultPricing": price(0)},
                "targets": [TARGET],
            },
        }
    ]


def tiers(count: int, narrowed: bool) -> list[dict[str, Any]]:
    narrowing = {
        "catalogs": [
            {"route": "aggregator", "models": ["Qwen/*", "deepseek-ai/*", "google/model-0004"]}
        ]
    }
    return [
        {
            "kind": "ApiKeyTier",
            "metadata": {"name": f"tier-{i:03d}"},
            "spec": {"isolation": "Shared", "keys": [{"secretRef": {"name": f"keys-{i:03d}"}}]}
            | (narrowing if narrowed else {}),
        }
        for i in range(count)
    ]


def shared_config(routes: list[dict[str, Any]], tier_bodies: list[dict[str, Any]]) -> GatewayConfig:
    secrets = {
        f"keys-{i:03d}": {"k": hash_client_key(f"client-key-{i}")} for i in range(len(tier_bodies))
    }
    translation = translate("bench", routes, tier_bodies, secrets, {})
    problems = {**translation.route_problems, **translation.tier_problems}
    assert not problems, problems
    (plan,) = translation.plans
    return plan.config


def best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def stored_bytes(config: GatewayConfig) -> int:
    payload = configmap_payload(config)
    return sum(len(v) for part in payload.values() for v in part.values())


def measure(name: str, routes: list[dict[str, Any]], tier_count: int, narrowed: bool) -> list[str]:
    config = shared_config(routes, tiers(tier_count, narrowed))
    one_tier = shared_config(routes, tiers(1, narrowed))
    raw = canonical_json(config)
    stored = stored_bytes(config)
    per_tier = (len(raw) - len(canonical_json(one_tier))) / max(1, tier_count - 1)
    translate_s = best_of(3, lambda: shared_config(routes, tiers(tier_count, narrowed)))
    compile_s = best_of(3, lambda: compile_config(parse_config(raw)))
    return [
        name,
        f"{len(raw):,}",
        f"{stored:,}",
        f"{stored / CONFIGMAP_LIMIT:.1%}",
        f"{len(gzip.compress(raw, compresslevel=9, mtime=0)):,}",
        f"{per_tier:,.0f}",
        f"{translate_s * 1000:,.0f} ms",
        f"{compile_s * 1000:,.0f} ms",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="184,2000")
    parser.add_argument("--tiers", type=int, default=90)
    args = parser.parse_args()
    header = [
        "namespace",
        "JSON bytes",
        "stored bytes",
        "of 1 MiB",
        "gzip bytes",
        "bytes/tier",
        "translate",
        "gateway compile",
    ]
    for count in (int(n) for n in args.models.split(",")):
        models = model_names(count)
        rows = [
            measure("routes", per_model_routes(models), args.tiers, narrowed=False),
            measure("catalog", catalog_route(models), args.tiers, narrowed=False),
            measure("narrowed", catalog_route(models), args.tiers, narrowed=True),
        ]
        print(f"\n{count} models, {args.tiers} Shared tiers on one gateway:")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )


if __name__ == "__main__":
    main()
