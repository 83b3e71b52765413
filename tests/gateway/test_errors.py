"""OpenAI's error envelope (errors.py)."""

from __future__ import annotations

from tiergate_gateway.errors import GatewayError


def test_error_envelope():
    error = GatewayError(
        403, "nope", type_="permission_error", code="model_not_allowed", param="model"
    )
    assert (
        error.body()
        == b'{"error":{"message":"nope","type":"permission_error","param":"model","code":"model_not_allowed"}}'
    )
