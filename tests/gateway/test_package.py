"""The package's public exports."""

from __future__ import annotations

import tiergate_contract as contract


def test_public_exports():
    import tiergate_gateway.__main__ as cli
    import tiergate_gateway.app as app

    assert set(contract.__all__) >= {
        "GatewayConfig",
        "Route",
        "Target",
        "Tier",
        "Limits",
        "Budget",
        "TierUpstream",
        "CredentialRef",
        "Pricing",
        "Failover",
        "CircuitBreaker",
        "Timeouts",
        "RequestClass",
        "seal",
        "canonical_json",
        "hash_client_key",
        "CONFIG_VERSION",
        "CONFIG_KEY",
    }
    for module in (contract, cli, app):
        for name in module.__all__:
            assert hasattr(module, name), name
    assert cli.__all__ == ["TUNING_FLAGS", "main", "parse_args", "run", "serve"]
