"""Config validation, compilation and rejection messages (config.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.gateway import ACME_KEY, STARTUP_KEY, config, route, target, tier
from tiergate_contract import (
    RequestClass,
    canonical_json,
)
from tiergate_gateway.config import ConfigRejected, compile_config, parse_config


def _valid():
    return config(
        [
            route(
                "m",
                target("a", "http://127.0.0.1:1/v1"),
                target("p", "http://127.0.0.1:2/v1", premium=True),
            )
        ],
        [tier("t", STARTUP_KEY, ["m"]), tier("u", ACME_KEY, [])],
    )


def test_parse_config_round_trip_and_compile():
    cfg = _valid()
    assert parse_config(canonical_json(cfg)) == cfg
    compiled = compile_config(cfg)
    assert [t.name for t in compiled.routes["m"].candidates[RequestClass.PREMIUM]] == ["p"]
    assert [t.name for t in compiled.routes["m"].candidates[RequestClass.STANDARD]] == ["a"]
    assert compiled.allowed == {"t": frozenset({"m"}), "u": frozenset()}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda raw: raw.replace(b"gateway-config/v1", b"gateway-config/v2"),
            "unknown config version",
        ),
        (lambda raw: raw[:-5], "not valid JSON"),
        (lambda raw: b"[]", "not a JSON object"),
        (lambda raw: raw.replace(b'"weight":100', b'"weight":-1', 1), "routes.0.targets.0.weight"),
        (lambda raw: raw.replace(b'"models":["m"]', b'"models":["zzz"]'), "unknown models"),
        (
            lambda raw: raw.replace(b"http://127.0.0.1:1/v1", b"ftp://x"),
            r"route .m. target .a.: base_url .ftp://x. is not an http\(s\) URL",
        ),
    ],
)
def test_parse_config_rejections_name_the_problem(mutate, message):
    with pytest.raises(ConfigRejected, match=message):
        compile_config(parse_config(mutate(canonical_json(_valid()))))


def test_parse_config_accepts_gzip_and_the_configmap_payload():
    import gzip

    from tiergate_contract import config_from_configmap, configmap_payload

    cfg = _valid()
    assert parse_config(gzip.compress(canonical_json(cfg))) == cfg
    packed = config_from_configmap(configmap_payload(cfg))
    assert packed is not None
    assert parse_config(packed) == cfg
    with pytest.raises(ConfigRejected, match="not valid gzip"):
        parse_config(b"\x1f\x8b" + b"garbage")


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=10,
    ),
    st.sampled_from(["version", "generation", "routes", "tiers", "gateway", "namespace"]),
)
def test_config_parser_only_ever_rejects(value, field):
    """Any JSON in any field: either a valid config or ConfigRejected, never another exception."""
    raw = _valid().model_dump(mode="json")
    raw[field] = value
    message = "accepted"
    try:
        compile_config(parse_config(json.dumps(raw).encode()))
    except ConfigRejected as exc:
        message = str(exc)
    assert message
