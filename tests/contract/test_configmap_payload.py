"""Large configs travel gzip-compressed in binaryData; small ones stay readable in data."""

from __future__ import annotations

import base64

from tiergate_contract import (
    CONFIG_GZIP_KEY,
    CONFIG_KEY,
    Route,
    Target,
    Tier,
    canonical_json,
    config_from_configmap,
    configmap_payload,
    hash_client_key,
    seal,
)
from tiergate_operator.render import configmap_bytes


def config_with(routes: int, tiers: int):  # type: ignore[no-untyped-def]
    route_list = [
        Route(
            model=f"model-{i:04d}",
            targets=(
                Target(
                    name="primary",
                    base_url="http://127.0.0.1:9901/v1",
                    upstream_model=f"m{i}",
                    weight=1,
                    priority=0,
                ),
            ),
        )
        for i in range(routes)
    ]
    tier_list = [
        Tier(
            name=f"tier-{t}",
            key_sha256=(hash_client_key(f"k{t}"),),
            models=tuple(r.model for r in route_list),
        )
        for t in range(tiers)
    ]
    return seal(gateway="tiergate-shared", namespace="ns", routes=route_list, tiers=tier_list)


def test_small_configs_are_inline_json() -> None:
    config = config_with(3, 2)
    payload = configmap_payload(config)
    assert payload == {"data": {CONFIG_KEY: canonical_json(config).decode()}}
    assert config_from_configmap(payload) == canonical_json(config)


def test_configs_beyond_a_configmap_are_compressed_deterministically() -> None:
    config = config_with(1000, 90)
    assert len(canonical_json(config)) > 1024 * 1024  # would not fit a ConfigMap as JSON
    payload = configmap_payload(config)
    assert set(payload) == {"binaryData"}
    assert len(payload["binaryData"][CONFIG_GZIP_KEY]) < 512 * 1024
    assert config_from_configmap(payload) == canonical_json(config)
    assert configmap_payload(config) == payload


def test_a_corrupt_or_missing_payload_is_not_a_config() -> None:
    assert config_from_configmap({"binaryData": {CONFIG_GZIP_KEY: "bm90IGd6aXA="}}) == b""
    assert config_from_configmap({"data": {"other": "x"}}) is None


def test_configmap_bytes_counts_what_the_api_server_limits() -> None:
    small, large = config_with(3, 2), config_with(1000, 90)
    assert configmap_bytes(configmap_payload(small)) == len(canonical_json(small))
    packed = configmap_payload(large)["binaryData"][CONFIG_GZIP_KEY]
    # binaryData counts decoded, not as the base64 text the manifest carries.
    assert configmap_bytes(configmap_payload(large)) == len(base64.b64decode(packed)) < len(packed)
