"""The nesting bound of request bodies, on the parser alone: its shortcuts (too few brackets,
too short a body) never let a body deeper than the limit through."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiergate_gateway.calls import _parse
from tiergate_gateway.errors import GatewayError
from tiergate_gateway.server import Request

_nested = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(alphabet='[]{}"x', max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=12,
)


def _depth(value: Any) -> int:
    """Levels of objects and arrays (the reference definition)."""
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _request(payload: dict[str, Any]) -> Request:
    return Request("POST", "/v1/chat/completions", {}, orjson.dumps(payload))


@given(value=_nested, limit=st.integers(min_value=2, max_value=8))
def test_a_body_is_refused_exactly_when_it_is_deeper_than_the_limit(value: Any, limit: int) -> None:
    payload = {"model": "m", "x": value}
    if _depth(payload) > limit:
        with pytest.raises(GatewayError) as refused:
            _parse(_request(payload), limit)
        assert refused.value.status == 400 and refused.value.code == "invalid_json"
    else:
        assert _parse(_request(payload), limit) == payload


@pytest.mark.parametrize("limit", [2, 3, 64])
def test_the_shortest_body_one_level_too_deep_is_refused(limit: int) -> None:
    value: Any = []
    for _ in range(limit - 1):  # the body's own object and ``limit`` arrays
        value = [value]
    with pytest.raises(GatewayError):
        _parse(_request({"model": "m", "x": value}), limit)
    assert _parse(_request({"model": "m", "x": value[0]}), limit)
