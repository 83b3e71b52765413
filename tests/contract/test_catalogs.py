"""The contract's catalog rules: every name a request can ask for leads to one place."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.support.gateway import STARTUP_KEY, catalog, config, route, target, tier, tier_catalog
from tiergate_contract import canonical_json

URL = "http://127.0.0.1:9901/v1"


def agg(name: str = "agg", model: str = "m1", **kw: object) -> object:
    return catalog(name, [("a", URL, 0)], {model: ("1", "2")}, **kw)  # type: ignore[arg-type]


def with_catalog(*catalogs: object, routes: tuple[object, ...] = (), grants: tuple[str, ...] = ()):
    entry = tier("t", STARTUP_KEY, []).model_copy(
        update={"catalogs": tuple(tier_catalog(g) for g in grants)}
    )
    return config(list(routes), [entry], list(catalogs))  # type: ignore[arg-type]


def test_a_config_without_catalogs_serialises_as_before() -> None:
    plain = config([route("chat", target("a", URL))], [tier("t", STARTUP_KEY, ["chat"])])
    assert b"catalog" not in canonical_json(plain)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: with_catalog(agg(), routes=(route("agg", target("a", URL)),)),
         "catalog 'agg': 'agg' is also route 'agg'"),
        (lambda: with_catalog(agg(), routes=(route("m1", target("a", URL)),)),
         "catalog 'agg': 'm1' is also route 'm1'"),
        (lambda: with_catalog(agg("one"), agg("two")),
         "catalog 'two': 'm1' is also in catalog 'one'"),
        (lambda: with_catalog(agg("one", patterns={"Qwen/": None}), agg("two", "m2", patterns={"Qwen/": None})),
         "catalogs 'one' and 'two' both pass 'Qwen/'*"),
        (lambda: with_catalog(grants=("missing",)), "tier 't' allows unknown catalogs ['missing']"),
        (lambda: catalog("agg", [("a", URL, 0)], {}), "catalog 'agg' has neither models nor patterns"),
        (lambda: catalog("agg", [("a", URL, 0), ("a", URL, 1)], {"m": ("1", "1")}),
         "catalog 'agg': target names are not unique"),
    ],
)  # fmt: skip
def test_ambiguous_or_empty_catalogs_are_refused(build: object, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        build()  # type: ignore[operator]
    assert message in str(refused.value)


def test_narrowing_takes_names_and_prefix_patterns() -> None:
    grant = tier_catalog("agg", "Qwen/*", "deepseek-ai/DeepSeek-V3")
    assert grant.allows("Qwen/anything") and grant.allows("deepseek-ai/DeepSeek-V3")
    assert not grant.allows("deepseek-ai/DeepSeek-V3-Lite") and not grant.allows("qwen/x")
    assert tier_catalog("agg").allows("whatever")
