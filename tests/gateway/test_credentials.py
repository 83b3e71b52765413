"""Upstream credentials read from mounted files (credentials.py)."""

from __future__ import annotations

import tiergate_contract as contract
from tiergate_gateway.credentials import CredentialStore


def test_credentials_store(tmp_path):
    store = CredentialStore(tmp_path, recheck_seconds=0)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "k").write_text("value\n")
    ref = contract.CredentialRef(secret="s", key="k")
    assert store.get(ref) == "value"
    (tmp_path / "s" / "k").write_text("new-value-longer")
    assert store.get(ref) == "new-value-longer"
    assert store.get(contract.CredentialRef(secret="..", key="k")) is None
    assert store.get(contract.CredentialRef(secret="s", key="missing")) is None
    (tmp_path / "s" / "k").write_text("two\nlines")
    assert store.get(ref) is None  # never sent as a header
