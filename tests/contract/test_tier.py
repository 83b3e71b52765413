"""The contract's Tier: key digests are lowercase hex SHA-256."""

from __future__ import annotations

import pytest

import tiergate_contract as contract


@pytest.mark.parametrize("bad", ["A" * 64, "a" * 63, "a" * 65, "g" * 64, ""])
def test_tier_digests_must_be_lowercase_hex_sha256(bad: str) -> None:
    with pytest.raises(ValueError, match="not a hex SHA-256 digest"):
        contract.Tier(name="t", key_sha256=("ab" * 32, bad), models=())
    assert contract.Tier(name="t", key_sha256=("0123456789abcdef" * 4,), models=()).key_sha256
