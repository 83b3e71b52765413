"""A proxied request read into a ``Call``: authenticated, parsed and routed, or a 4xx ``GatewayError``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from tiergate_contract import RequestClass, Tier

from .auth import identify
from .config import CompiledConfig, CompiledRoute, TierSettings
from .errors import GatewayError
from .server import Request

__all__ = ["Call", "HedgeLoser", "read_call"]

_DEFAULT_MAX_TOKENS = 4096
_CLASSES = {"premium": RequestClass.PREMIUM, "standard": RequestClass.STANDARD}


class HedgeLoser(NamedTuple):
    """An attempt that was sent and cut before it served (a hedge that lost, a client that
    left): what its upstream may bill for it."""

    target: str
    prompt_tokens: int  # estimated from the body it was sent, as a prompt is from the client's
    completion_tokens: int  # the data events that had reached the gateway when it was cut


@dataclass(slots=True)
class Call:
    """One client request, ready to admit and send; the forwarder notes how it went."""

    path: str
    payload: dict[str, Any]
    stream: bool
    tier: Tier
    route: CompiledRoute
    request_class: RequestClass
    prompt_tokens: int  # estimated before the call; settled to the reported usage after
    max_tokens: int  # what the answer may cost at most, for the budget reservation
    trace_lines: bytes = b""  # x-request-id and trace context header lines for the upstream
    tried: list[str] = field(default_factory=list)  # the targets attempts went to, in order
    upstream_seconds: float = 0.0  # spent waiting on upstreams (perf_counter seconds)
    first_token_at: float = 0.0  # perf_counter when the first token (or whole answer) came
    upstream_request_id: str | None = None  # the serving upstream's own x-request-id
    hedge_losers: tuple[HedgeLoser, ...] = ()  # attempts sent and cut (hedges, a client gone)
    strip_usage: bool = False  # drop the usage-only chunk the client did not ask for
    key_name: str = ""  # the client key's name (``<secret>/<data key>``), never its value
    settings: TierSettings | None = None  # the tier's, from the compiled config


def read_call(request: Request, compiled: CompiledConfig, max_json_depth: int = 64) -> Call:
    """Who asks (401), for what (400, 415), and whether they may (403, 404)."""
    tier, key_name, settings = identify(request.headers.get("authorization"), compiled)
    payload = _parse(request, max_json_depth)
    model = payload["model"]
    route = compiled.lookup(model)
    if route is None:
        raise GatewayError(
            404,
            f"The model {model[:200]!r} does not exist",
            param="model",
            code="model_not_found",
        )
    tier_name = settings.name
    if not compiled.may_use(tier_name, model, route):
        raise GatewayError(
            403,
            f"your tier may not use model {model!r}",
            type_="permission_error",
            param="model",
            code="model_not_allowed",
        )
    request_class = _request_class(request, settings)
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise GatewayError(400, "stream must be a boolean", param="stream", code="invalid_type")
    embeddings = request.path == "/v1/embeddings"
    strip_usage = False
    if stream and not embeddings:
        # Usage is always asked for, so a streamed call settles on what the upstream counted
        # whatever the client sent; a client that did not ask does not get the extra chunk.
        options = payload.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            extra = options if isinstance(options, dict) else {}
            payload["stream_options"] = {**extra, "include_usage": True}
            strip_usage = True
    # A cheap, deliberately generous estimate: ~4 bytes of JSON per token.
    prompt_tokens = len(request.body) // 4
    prompt_tokens = prompt_tokens if prompt_tokens > 1 else 1  # not max(): a call costs more
    max_tokens = 0 if embeddings else _max_tokens(payload)
    call = Call(
        request.path, payload, stream, tier, route, request_class, prompt_tokens, max_tokens
    )
    call.strip_usage = strip_usage
    call.key_name = key_name
    call.settings = settings
    return call


def _parse(request: Request, max_depth: int) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type.lower():
        raise GatewayError(
            415,
            f"content-type must be application/json, not {content_type[:100]!r}",
            code="unsupported_media_type",
        )
    try:
        payload = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(
            400, f"request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(payload, dict):
        raise GatewayError(400, "request body must be a JSON object", code="invalid_json")
    # A body with fewer brackets than the limit cannot be that deep (counted in C; brackets in
    # strings only make the count larger), nor one too short to hold them and their closing
    # brackets: most requests stop here.
    body = request.body
    if (
        len(body) > 2 * max_depth
        and body.count(b"{") + body.count(b"[") > max_depth
        and _deeper_than(max_depth, payload)
    ):
        raise GatewayError(
            400,
            f"request body is nested deeper than {max_depth} levels of objects and arrays",
            code="invalid_json",
        )
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError(
            400,
            "'model' is required and must be a non-empty string",
            param="model",
            code="invalid_value" if "model" in payload else "missing_required_parameter",
        )
    return payload


def _deeper_than(limit: int, payload: dict[str, Any]) -> bool:
    """Does ``payload`` nest objects and arrays more than ``limit`` levels deep?"""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _request_class(request: Request, tier: TierSettings) -> RequestClass:
    header = request.headers.get("x-tiergate-class")
    if header is None:
        return tier.default_class
    found = _CLASSES.get(header.strip().lower())
    if found is None:
        raise GatewayError(
            400,
            "x-tiergate-class must be 'premium' or 'standard'",
            param="x-tiergate-class",
            code="invalid_value",
        )
    return found


def _max_tokens(payload: dict[str, Any]) -> int:
    name = "max_completion_tokens"
    value = payload.get(name)
    if value is None:
        name = "max_tokens"
        value = payload.get(name)
        if value is None:  # the common case: no loop and no second test for it
            return _DEFAULT_MAX_TOKENS
    if value.__class__ is not int or value < 0:  # not isinstance: a bool is no count
        raise GatewayError(
            400, f"{name} must be a non-negative integer", param=name, code="invalid_value"
        )
    return value
