"""Client authentication: ``Authorization: Bearer <key>`` -> the tier holding its SHA-256 digest."""

from __future__ import annotations

import hashlib
import hmac

from tiergate_contract import Tier

from .config import CompiledConfig
from .errors import GatewayError

__all__ = ["authenticate"]


def _unauthorized(message: str) -> GatewayError:
    return GatewayError(
        401,
        message,
        type_="invalid_request_error",
        code="invalid_api_key",
        headers=[("www-authenticate", "Bearer")],
    )


def authenticate(authorization: str | None, config: CompiledConfig) -> Tier:
    """The caller's tier, or a 401 ``GatewayError``. The key itself never leaves this function."""
    if not authorization:
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise _unauthorized("malformed Authorization header: expected 'Bearer <key>'")
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
    # Only a digest of the key is looked up (its timing tells nothing about the key);
    # the final comparison is constant-time all the same.
    entry = config.tiers_by_digest.get(digest)
    if entry is None or not hmac.compare_digest(entry[0], digest):
        raise _unauthorized("invalid API key")
    return entry[1]
