"""The gateway application: request handling, wired to its parts; an app factory, no module state.

``Gateway`` owns everything with a lifetime (upstream pool, Redis client,
config source, listening server); ``start()`` and ``stop()`` are its lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from tiergate_contract import GatewayConfig, RequestClass, Tier

from .auth import authenticate
from .budget import BudgetLedger, LocalLedger, RedisLedger, month_of, nano_cost
from .client import UpstreamPool
from .config import CompiledConfig, CompiledRoute, ConfigStore, compile_config
from .credentials import CredentialStore
from .errors import GatewayError, status_error_bytes
from .limits import Limiter, LocalLimiter, RedisLimiter
from .metrics import Metrics, status_label
from .proxy import Call, Outcome, forward
from .routing import BreakerBoard, plan
from .server import HttpServer, Request, Response, StreamResponse
from .settings import Settings
from .sources import FileSource, KubeSource, kube_access

__all__ = ["Gateway", "create_gateway"]

_log = logging.getLogger("tiergate_gateway")

_PROXIED = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
_DEFAULT_MAX_TOKENS = 4096
_CLASSES = {"premium": RequestClass.PREMIUM, "standard": RequestClass.STANDARD}


def _backend_down(what: str, exc: BaseException) -> GatewayError:
    """Limits and budgets fail closed: no call goes upstream unaccounted."""
    _log.error("the %s backend is unavailable: %s", what, type(exc).__name__)
    return GatewayError(
        503,
        f"the gateway's {what} store (Redis) is unavailable; try again shortly",
        type_="server_error",
        code="limits_unavailable",
        headers=[("retry-after", "1")],
    )


def _error_response(error: GatewayError) -> Response:
    return Response(error.status, error.body(), error.headers)


def _estimate_prompt_tokens(payload: dict[str, Any], body: bytes) -> int:
    """A cheap, deliberately generous estimate: ~4 bytes of JSON per token."""
    return max(1, len(body) // 4)


def _max_tokens(payload: dict[str, Any]) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise GatewayError(
                400, f"{name} must be a non-negative integer", param=name, code="invalid_value"
            )
        return value
    return _DEFAULT_MAX_TOKENS


class Gateway:
    """One gateway process. Use ``create_gateway(settings)``, then ``await start()`` / ``await stop()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        config: GatewayConfig | None = None,
        wall_clock: Callable[[], datetime] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.store = ConfigStore(on_rejected=self._rejected, on_loaded=self._loaded)
        self.credentials = CredentialStore(settings.credentials_dir)
        self.breakers = BreakerBoard()
        self._wall_clock = wall_clock
        self._month_cache = ("", 0.0)  # (month, epoch second it is valid until)
        self._rng = rng or random.Random()
        self._initial = config
        self.pool: UpstreamPool | None = None
        self.limiter: Limiter = LocalLimiter()
        self.ledger: BudgetLedger = LocalLedger()
        self._redis: Any = None
        self._source: FileSource | KubeSource | None = None
        self._flusher: asyncio.Task[None] | None = None
        # What a limits/budget store raises when it is unreachable (Redis adds its own).
        self._backend_errors: tuple[type[BaseException], ...] = (OSError,)
        self.server = HttpServer(
            self.handle, status_error_bytes, settings.max_body_bytes, settings.idle_seconds
        )
        self.port = settings.port
        self._routes: dict[tuple[str, str], Callable[[Request], Any]] = {
            ("GET", "/healthz"): self._healthz,
            ("GET", "/readyz"): self._readyz,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/v1/models"): self._models,
        }

    # -- lifespan ---------------------------------------------------------
    async def start(self, sock: socket.socket | None = None) -> None:
        if (
            self._initial is None
            and self.settings.config_file is None
            and self.settings.configmap is None
        ):
            raise ValueError("no config: pass a GatewayConfig, or set config_file or configmap")
        self.pool = UpstreamPool()
        if self.settings.redis_url is not None:
            # Imported only when used: redis costs ~0.1 s of start-up.
            from redis.asyncio import Redis
            from redis.exceptions import RedisError

            self._backend_errors = (RedisError, OSError)

            self._redis = Redis.from_url(self.settings.redis_url, decode_responses=False)
            self.limiter = RedisLimiter(self._redis)
            self.ledger = RedisLedger(self._redis)
        if self._initial is not None:
            self.store.install(compile_config(self._initial), "in-process")
        elif self.settings.config_file is not None:
            self._source = FileSource(
                self.settings.config_file, self.store.offer, self.settings.reload_interval_seconds
            )
        elif self.settings.configmap is not None:
            kubeconfig = self.settings.kubeconfig
            self._source = KubeSource(
                self.settings.configmap, self.store.offer, lambda: kube_access(kubeconfig)
            )
        if self._source is not None:
            await self._source.start()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_metrics())
        self.port = await self.server.start(
            self.settings.host, self.settings.port, reuse_port=self.settings.workers > 1, sock=sock
        )
        _log.info("gateway listening on %s:%d", self.settings.host, self.port)

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.metrics.flush()

    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests within the grace period, release clients."""
        await self.server.shutdown(self.settings.grace_seconds)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self.metrics.flush()
        if self._source is not None:
            await self._source.stop()
        if self.pool is not None:
            await self.pool.close()
        if self._redis is not None:
            await self._redis.aclose()

    def _rejected(self, reason: str) -> None:
        self.metrics.config_rejected.inc()

    def _loaded(self, compiled: CompiledConfig) -> None:
        self.credentials.invalidate()
        self.metrics.forget_labels()
        self.metrics.set_generation(compiled.generation)
        keys = {(r.model, t.name) for r in compiled.config.routes for t in r.targets}
        self.breakers.retain(keys)

    # -- requests ---------------------------------------------------------
    async def handle(self, request: Request) -> Response | StreamResponse:
        started = time.perf_counter()
        endpoint = _PROXIED.get(request.path)
        tier_name, route_name = "-", "-"
        try:
            if endpoint is not None:
                if request.method != "POST":
                    raise GatewayError(
                        405, f"{request.path} accepts POST only", code="method_not_allowed"
                    )
                response, tier_name, route_name = await self._proxy(request)
            else:
                handler = self._routes.get((request.method, request.path))
                if handler is None:
                    known = any(path == request.path for _, path in self._routes)
                    if known:
                        raise GatewayError(
                            405, f"{request.path} accepts GET only", code="method_not_allowed"
                        )
                    raise GatewayError(
                        404, f"unknown path {request.path[:200]!r}", code="unknown_url"
                    )
                response = await handler(request)
                endpoint = "other"
        except GatewayError as error:
            response = _error_response(error)
            endpoint = endpoint or "other"
        metrics = self.metrics
        metrics.add(
            metrics.requests, endpoint, tier_name, route_name, status_label(response.status)
        )
        metrics.observe_latency(time.perf_counter() - started, endpoint, tier_name)
        return response

    def _month(self) -> str:
        """The budget month (UTC); without an injected clock, recomputed only at month ends."""
        if self._wall_clock is not None:
            return month_of(self._wall_clock())
        month, until = self._month_cache
        now = time.time()
        if now >= until:
            current = datetime.fromtimestamp(now, UTC)
            month = month_of(current)
            nxt = datetime(
                current.year + current.month // 12, current.month % 12 + 1, 1, tzinfo=UTC
            )
            self._month_cache = (month, min(nxt.timestamp(), now + 60))
        return month

    def _config(self) -> CompiledConfig:
        compiled = self.store.current
        if compiled is None:
            raise GatewayError(
                503,
                "the gateway has no valid config yet",
                type_="server_error",
                code="not_ready",
                headers=[("retry-after", "1")],
            )
        return compiled

    async def _healthz(self, request: Request) -> Response:
        return Response(200, b'{"status":"ok"}')

    async def _readyz(self, request: Request) -> Response:
        compiled = self.store.current
        if compiled is None or self.server.draining:
            return Response(503, b'{"status":"not ready"}')
        return Response(200, orjson.dumps({"status": "ready", "generation": compiled.generation}))

    async def _metrics(self, request: Request) -> Response:
        self._export_circuits()
        return Response(
            200, self.metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8"
        )

    def _export_circuits(self) -> None:
        now = time.monotonic()
        for (route, target), breaker in self.breakers.items():
            state = breaker.state
            if state == 1 and breaker.available(now):
                state = type(state)(2)
            self.metrics.child(self.metrics.circuit, route, target).set(int(state))

    async def _models(self, request: Request) -> Response:
        compiled = self._config()
        tier = authenticate(request.headers.get("authorization"), compiled)
        return Response(200, compiled.models_body[tier.name])

    async def _proxy(self, request: Request) -> tuple[Response | StreamResponse, str, str]:
        compiled = self._config()
        tier = authenticate(request.headers.get("authorization"), compiled)
        payload = self._parse(request)
        model = payload["model"]
        route = compiled.routes.get(model)
        if route is None:
            raise GatewayError(
                404,
                f"The model {model[:200]!r} does not exist",
                param="model",
                code="model_not_found",
            )
        if model not in compiled.allowed[tier.name]:
            raise GatewayError(
                403,
                f"your tier may not use model {model!r}",
                type_="permission_error",
                param="model",
                code="model_not_allowed",
            )
        request_class = self._request_class(request, tier)
        stream = payload.get("stream", False)
        if not isinstance(stream, bool):
            raise GatewayError(400, "stream must be a boolean", param="stream", code="invalid_type")
        if stream and request.path != "/v1/embeddings" and "stream_options" not in payload:
            # Ask for usage in the last chunk so streamed calls settle limits and budgets exactly.
            payload["stream_options"] = {"include_usage": True}
        prompt_tokens = _estimate_prompt_tokens(payload, request.body)
        max_tokens = 0 if request.path == "/v1/embeddings" else _max_tokens(payload)

        limits = tier.limits
        try:
            decision = await self.limiter.acquire(tier.name, limits, prompt_tokens)
        except self._backend_errors as exc:
            raise _backend_down("limits", exc) from None
        if not decision.allowed:
            self.metrics.add(self.metrics.rate_limited, tier.name, decision.limit)
            retry = max(1, int(decision.retry_after + 0.999))
            raise GatewayError(
                429,
                f"rate limit reached for tier {tier.name!r}: {decision.limit} per "
                f"{'minute' if decision.limit != 'concurrency' else 'moment'}; retry after {retry}s",
                type_="requests" if decision.limit != "tokens" else "tokens",
                code="rate_limit_exceeded",
                headers=[("retry-after", str(retry)), *decision.headers],
            )
        headers = list(decision.headers)
        reserved = 0
        month = ""
        try:
            if tier.budget is not None:
                month = self._month()
                reserved = nano_cost(
                    *route.max_nano_prices[request_class], prompt_tokens, max_tokens
                )
                try:
                    verdict = await self.ledger.reserve(tier.name, tier.budget, month, reserved)
                except self._backend_errors as exc:
                    raise _backend_down("budgets", exc) from None
                if not verdict.allowed:
                    self.metrics.add(self.metrics.budget_rejected, tier.name)
                    raise GatewayError(
                        429,
                        f"monthly budget of tier {tier.name!r} is exhausted (hard limit "
                        f"{tier.budget.hard_usd} USD)",
                        type_="insufficient_quota",
                        code="budget_exceeded",
                        headers=[("x-should-retry", "false")],
                    )
                if verdict.warn:
                    self.metrics.add(self.metrics.budget_warnings, tier.name)
                    headers.append(
                        (
                            "x-tiergate-budget-warning",
                            f"spend is above the soft budget of {tier.budget.soft_usd} USD",
                        )
                    )
        except BaseException:
            with contextlib.suppress(*self._backend_errors):
                await self.limiter.release(tier.name, limits)
            raise

        board = self.breakers.for_route(
            model, route.route.targets, route.route.failover.circuit_breaker
        )
        order = plan(route.groups[request_class], board, time.monotonic(), self._rng)

        async def finish(outcome: Outcome) -> None:
            await self._settle(tier, route, outcome, prompt_tokens, reserved, month)

        call = Call(request.path, payload, stream, tier, route, order, board, headers)
        assert self.pool is not None
        response = await forward(
            call, pool=self.pool, credentials=self.credentials, metrics=self.metrics, finish=finish
        )
        return response, tier.name, model

    async def _settle(
        self,
        tier: Tier,
        route: CompiledRoute,
        outcome: Outcome,
        estimated: int,
        reserved: int,
        month: str,
    ) -> None:
        usage, target = outcome.usage, outcome.target
        model = route.route.model
        actual_prompt = (
            usage.prompt_tokens
            if usage is not None and usage.reported
            else (estimated if target is not None else 0)
        )
        completion = usage.completion_tokens if usage is not None else 0
        cost = (
            nano_cost(*route.nano_prices[target.name], actual_prompt, completion)
            if target is not None
            else 0
        )
        try:
            await self.limiter.finish(tier.name, tier.limits, estimated, actual_prompt + completion)
            if tier.budget is not None:
                await self.ledger.settle(tier.name, month, reserved, cost)
        except self._backend_errors as exc:
            # The answer is already on its way; the Redis keys expire, so a lost settle heals.
            _log.warning("settling a call of tier %s failed: %s", tier.name, type(exc).__name__)
        if target is not None and (actual_prompt or completion):
            self.metrics.add_usage(
                tier.name, model, target.name, actual_prompt, completion, cost / 1e9
            )

    def _parse(self, request: Request) -> dict[str, Any]:
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
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise GatewayError(
                400,
                "'model' is required and must be a non-empty string",
                param="model",
                code="invalid_value" if "model" in payload else "missing_required_parameter",
            )
        return payload

    def _request_class(self, request: Request, tier: Tier) -> RequestClass:
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


def create_gateway(
    settings: Settings,
    *,
    config: GatewayConfig | None = None,
    wall_clock: Callable[[], datetime] | None = None,
    rng: random.Random | None = None,
) -> Gateway:
    """The app factory: a new, unstarted gateway with no shared state."""
    return Gateway(settings, config=config, wall_clock=wall_clock, rng=rng)
