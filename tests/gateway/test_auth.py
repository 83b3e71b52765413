"""Client keys that expire: the gateway's own clock refuses them from their moment on.

Pure tests drive ``authenticate`` with an injected clock; the last one runs a real gateway
and the openai SDK across a key's expiry, with no config written at that moment.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from tests.support.gateway import STARTUP_KEY, config, route, target, tier
from tiergate_contract import GatewayConfig, KeyExpiry, Tier, hash_client_key
from tiergate_gateway.auth import authenticate, identify
from tiergate_gateway.config import compile_config
from tiergate_gateway.errors import GatewayError

EXPIRES = datetime(2026, 12, 31, tzinfo=UTC)
OTHER_KEY = "sk-startup-other-0002"


def _expiring(base: Tier, moment: datetime, *keys: str) -> Tier:
    digests = tuple(sorted({*base.key_sha256, *(hash_client_key(k) for k in keys)}))
    return base.model_copy(
        update={
            "key_sha256": digests,
            "key_expiry": (KeyExpiry(sha256=hash_client_key(STARTUP_KEY), expires_at=moment),),
        }
    )


def _config(moment: datetime, base_url: str = "http://127.0.0.1:9/v1") -> GatewayConfig:
    startup = _expiring(tier("startup", STARTUP_KEY, ["m"]), moment, OTHER_KEY)
    return config([route("m", target("a", base_url))], [startup])


def _refusal(authorization: str, now: datetime) -> GatewayError:
    compiled = compile_config(_config(EXPIRES))
    with pytest.raises(GatewayError) as caught:
        authenticate(authorization, compiled, clock=lambda: now.timestamp())
    return caught.value


def test_a_key_holds_until_its_expiry_and_is_refused_from_that_second_on() -> None:
    compiled = compile_config(_config(EXPIRES))
    before = (EXPIRES - timedelta(milliseconds=1)).timestamp()
    assert authenticate(f"Bearer {STARTUP_KEY}", compiled, clock=lambda: before).name == "startup"
    error = _refusal(f"Bearer {STARTUP_KEY}", EXPIRES)
    assert (error.status, error.code) == (401, "key_expired")
    assert error.message == (
        "API key expired at 2026-12-31T00:00:00Z: ask your platform team for a new key"
    )
    assert ("www-authenticate", "Bearer") in error.headers


def test_an_expiry_concerns_only_its_own_key() -> None:
    compiled = compile_config(_config(EXPIRES))
    later = (EXPIRES + timedelta(days=365)).timestamp()
    assert authenticate(f"Bearer {OTHER_KEY}", compiled, clock=lambda: later).name == "startup"


def test_an_unknown_key_is_invalid_whatever_the_time() -> None:
    error = _refusal("Bearer sk-nobody", EXPIRES + timedelta(days=1))
    assert (error.status, error.code) == (401, "invalid_api_key")


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {OTHER_KEY}",
        f"bearer {OTHER_KEY}",
        f"BEARER {OTHER_KEY}",
        f"Bearer   {OTHER_KEY}  ",
        f"Bearer {OTHER_KEY}\t",
    ],
)
def test_the_scheme_is_matched_in_any_case_and_the_key_stripped(authorization: str) -> None:
    compiled = compile_config(_config(EXPIRES))
    found, name, settings = identify(authorization, compiled, clock=lambda: 0.0)
    assert (found.name, settings.name) == ("startup", "startup")
    assert settings is compiled.tier_settings["startup"]
    assert OTHER_KEY not in name  # a key's name, never its value


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("", "invalid_api_key"),
        ("Bearer", "invalid_api_key"),
        ("Bearer ", "invalid_api_key"),
        ("Bearer    ", "invalid_api_key"),
        (f"Basic {OTHER_KEY}", "invalid_api_key"),
        (f"Bearer{OTHER_KEY}", "invalid_api_key"),
        (f"Bearer {OTHER_KEY}x", "invalid_api_key"),
    ],
)
def test_a_malformed_or_unknown_authorization_is_refused(authorization: str, code: str) -> None:
    error = _refusal(authorization, EXPIRES - timedelta(days=1))
    assert (error.status, error.code) == (401, code)
    malformed = authorization.strip() in {"Bearer", f"Basic {OTHER_KEY}", f"Bearer{OTHER_KEY}"}
    if malformed:
        assert error.message.startswith("malformed Authorization header")


def test_a_config_without_expiring_keys_serialises_as_before() -> None:
    plain = tier("startup", STARTUP_KEY, ["m"])
    assert "key_expiry" not in plain.model_dump(mode="json")
    assert "key_expiry" in _config(EXPIRES).tiers[0].model_dump(mode="json")


def test_an_expiry_must_name_a_key_of_its_tier() -> None:
    with pytest.raises(ValueError, match="names a key not in key_sha256"):
        Tier(
            name="t",
            key_sha256=(hash_client_key("a"),),
            models=(),
            key_expiry=(KeyExpiry(sha256=hash_client_key("b"), expires_at=EXPIRES),),
        )


def test_the_sdk_sees_a_key_expire_on_a_real_gateway(upstreams, start_gateway) -> None:
    moment = datetime.now(UTC) + timedelta(seconds=1.5)
    cfg = _config(moment, upstreams["a"].base_url)
    gateway = start_gateway(cfg)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=STARTUP_KEY, max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    reply = client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "hello from a"
    time.sleep(max(0.0, moment.timestamp() - time.time()) + 0.05)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert caught.value.code == "key_expired"
    assert "API key expired at" in caught.value.message
    # The other key of the tier keeps working, and the config written before still serves.
    other = openai.OpenAI(base_url=gateway.url + "/v1", api_key=OTHER_KEY, max_retries=0)
    assert other.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert httpx.get(gateway.url + "/readyz").json()["generation"] == cfg.generation
