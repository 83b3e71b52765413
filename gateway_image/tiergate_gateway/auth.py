"""Client authentication: ``Authorization: Bearer <key>`` -> the tier holding its SHA-256 digest.

A key may carry an expiry in the config; it is enforced here, by this gateway's clock, so a
key stops at its moment on every replica without any config being written then.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

try:  # CPython's own SHA-256: about 1,400 instructions less per key than OpenSSL's EVP calls
    from _sha256 import sha256 as _builtin_sha256  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - a Python built without it
    _builtin_sha256 = hashlib.sha256

from tiergate_contract import Tier

from .config import CompiledConfig, TierSettings
from .errors import GatewayError

__all__ = ["authenticate", "identify"]

_sha256: Callable[[bytes], hashlib._Hash] = _builtin_sha256


def _unauthorized(message: str, code: str = "invalid_api_key") -> GatewayError:
    return GatewayError(
        401,
        message,
        type_="invalid_request_error",
        code=code,
        headers=[("www-authenticate", "Bearer")],
    )


def _expired(expires_at: float) -> GatewayError:
    moment = datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _unauthorized(
        f"API key expired at {moment}: ask your platform team for a new key", code="key_expired"
    )


def authenticate(
    authorization: str | None, config: CompiledConfig, clock: Callable[[], float] = time.time
) -> Tier:
    """The caller's tier, or a 401 ``GatewayError``. The key itself never leaves this function.

    ``clock`` (POSIX seconds) decides whether an expiring key still holds.
    """
    return identify(authorization, config, clock)[0]


def identify(
    authorization: str | None, config: CompiledConfig, clock: Callable[[], float] = time.time
) -> tuple[Tier, str, TierSettings]:
    """``authenticate``, with the key's name (``<secret>/<data key>``, never its value) and the
    tier's settings."""
    if not authorization:
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    if authorization.startswith("Bearer "):  # the usual spelling: no partition, no lower()
        key = authorization[7:].strip()
    else:
        scheme, _, key = authorization.partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
    if not key:
        raise _unauthorized("malformed Authorization header: expected 'Bearer <key>'")
    digest = _sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
    # Only a digest of the key is looked up: the lookup's timing can tell something of the
    # digest, nothing of the key (no constant-time comparison to add: a found entry's digest
    # is the one looked up).
    entry = config.tiers_by_digest.get(digest)
    if entry is None:
        raise _unauthorized("invalid API key")
    expires_at = entry[4]
    if expires_at is not None and clock() >= expires_at:
        raise _expired(expires_at)
    return entry[1], entry[2], entry[3]
