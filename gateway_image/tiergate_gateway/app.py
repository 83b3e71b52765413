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
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson

from tiergate_contract import GatewayConfig

from .access_log import AccessLog
from .admission import Admission, Admissions
from .auth import authenticate
from .budget import BudgetMonth, LocalLedger
from .calls import Call, read_call
from .client import UpstreamPool
from .config import CompiledConfig, ConfigStore, compile_config
from .credentials import CredentialStore
from .durable import DurableSpend
from .errors import GatewayError, sse_error_event, status_error_bytes
from .handover import Handover
from .leases import RedisLeases
from .ledger_watch import LedgerWatch
from .limits import LocalLimiter
from .metrics import Metrics, status_label
from .proxy import Forwarder, Served
from .redis_client import RedisClient, connect
from .relay import relay, whole_stream
from .report_writer import SpendReporter, pod_name
from .routing import BreakerBoard, BreakerState
from .server import HttpServer, Request, Response, StreamResponse
from .settings import Settings
from .sources import FileSource, KubeAccess, KubeSource, kube_access
from .spend import SpendRecorder
from .tracing import trace_of

__all__ = ["Gateway", "create_gateway"]

_log = logging.getLogger("tiergate_gateway")

# Probes and scrapes: answered, counted in metrics, but not access-logged.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

# What a stream still open at the end of the grace period ends with.
_STREAM_CUT = sse_error_event(
    "the gateway shut down before the stream ended; retry the request",
    "server_error",
    "gateway_shutting_down",
)

_PROXIED = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


def _error_response(error: GatewayError) -> Response:
    return Response(error.status, error.body(), error.headers)


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
        self.metrics = Metrics(
            settings.ttft_buckets,
            settings.overhead_buckets,
            extra_latency_buckets=settings.latency_buckets,
        )
        self.access_log = AccessLog(settings.access_log_sample)
        self.store = ConfigStore(on_rejected=self._rejected, on_loaded=self._loaded)
        self.credentials = CredentialStore(settings.credentials_dir)
        self.breakers = BreakerBoard()
        self._rng = rng or random.Random()
        self._initial = config
        self.pool: UpstreamPool | None = None
        self.admissions = Admissions(
            LocalLimiter(), LocalLedger(), self.metrics, BudgetMonth(wall_clock), (OSError,)
        )
        self._forwarder: Forwarder | None = None
        self._redis: RedisClient | None = None
        self._source: FileSource | KubeSource | None = None
        self._reporter: SpendReporter | None = None
        self._ledger_watch: LedgerWatch | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.server = HttpServer(self.handle, status_error_bytes, limits=settings.server_limits())
        self.server.on_internal_error = self._internal_error
        self.port = settings.port
        self.stopping = False  # SIGTERM came: /readyz answers 503 from now on
        self._routes: dict[tuple[str, str], Callable[[Request], Any]] = {
            ("GET", "/healthz"): self._healthz,
            ("GET", "/readyz"): self._readyz,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/v1/models"): self._models,
        }
        # What each path accepts, for the server's 405 answers (their Allow header).
        self.server.allowed_methods = {path: ("POST",) for path in _PROXIED} | {
            path: tuple(m for m, p in self._routes if p == path) for _, path in self._routes
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
        self._forwarder = Forwarder(
            self.pool,
            self.credentials,
            self.breakers,
            self.metrics,
            self._rng,
            self.settings.max_response_bytes,
        )
        redis_options = self.settings.redis_options()
        if redis_options is not None:
            self._redis = connect(redis_options)
            self.admissions.shared = RedisLeases(self._redis)
            self.admissions.lease_margin_seconds = self.settings.lease_margin_seconds
            self.admissions.backend_errors = self._redis.errors
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
        if isinstance(self._source, KubeSource):
            await self._start_ledger(self._source.namespace)
        self._flusher = asyncio.get_running_loop().create_task(self._flush_metrics())
        self.port = await self.server.start(
            self.settings.host, self.settings.port, reuse_port=self.settings.workers > 1, sock=sock
        )
        _log.info("gateway listening on %s:%d", self.settings.host, self.port)

    async def _start_ledger(self, namespace: str) -> None:
        """With the config from the API: report this process's spend there and count the
        tiers' durable spend (everyone's reports and the folded ledgers) in admissions."""
        kubeconfig = self.settings.kubeconfig
        admissions = self.admissions

        def access() -> KubeAccess:
            return kube_access(kubeconfig)

        def gateway() -> str | None:
            compiled = self.store.current
            return None if compiled is None else compiled.config.gateway

        recorder = SpendRecorder()
        reporter = SpendReporter(
            namespace,
            pod_name(),
            gateway,
            recorder,
            access,
            interval=self.settings.spend_report_seconds,
            heartbeat=self.settings.spend_heartbeat_seconds,
        )
        durable = DurableSpend(
            admissions.month,
            exclude_own=admissions.shared is None,
            own_report=lambda: reporter.name,
            own_base=reporter.own_base,
        )
        reporter.on_new_report = durable.refresh
        admissions.spend, admissions.durable = recorder, durable
        if admissions.shared is None:
            ledger, credits = admissions.ledger, admissions.credits
            if isinstance(ledger, LocalLedger):
                ledger.floor = lambda tier, month: durable.floors(tier, month).month
            # The admission passes the month it has: no second clock read per call.
            credits.floor = lambda tier, month: (
                durable.floors(tier, month or admissions.month()).lifetime
            )
        self._ledger_watch = LedgerWatch(namespace, durable, access)
        await self._ledger_watch.start()
        self._reporter = reporter
        await reporter.start()

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.metrics.flush()
            self.access_log.flush()

    async def stop(self) -> None:
        """Answer /readyz with 503 but keep serving for the drain delay (answers now close
        their connection), then stop accepting, drain in-flight requests within the grace
        period (a stream still open then ends with an SSE error event), release clients."""
        self.stopping = True
        self.server.keep_alive = False
        if self.settings.drain_delay_seconds > 0:
            await asyncio.sleep(self.settings.drain_delay_seconds)
        await self.server.shutdown(self.settings.grace_seconds, cut_stream_with=_STREAM_CUT)
        if self._reporter is not None:
            # Every call has settled: what this process spent goes on record before it ends.
            await self._reporter.stop()
        if self._ledger_watch is not None:
            await self._ledger_watch.stop()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self.metrics.flush()
        self.access_log.flush()
        if self._source is not None:
            await self._source.stop()
        if self.pool is not None:
            await self.pool.close()
        if self.admissions.shared is not None:
            await self.admissions.shared.close()
        if self._redis is not None:
            await self._redis.aclose()

    def _internal_error(self, where: str) -> None:
        self.metrics.add(self.metrics.internal_errors, where)

    def _rejected(self, reason: str) -> None:
        self.metrics.config_rejected.inc()

    def _loaded(self, compiled: CompiledConfig) -> None:
        self.credentials.invalidate()
        self.metrics.forget_labels()
        self.metrics.set_generation(compiled.generation)
        self.breakers.retain(compiled.breaker_keys())

    # -- requests ---------------------------------------------------------
    def handle(self, request: Request) -> Awaitable[Response | StreamResponse]:
        """The coroutine answering ``request`` (a plain function: one coroutine level less on
        every wait of a proxied call)."""
        endpoint = _PROXIED.get(request.path)
        if endpoint is not None and request.method == "POST":
            return self._proxy(request, endpoint)
        return self._other(request, endpoint)

    async def _other(self, request: Request, endpoint: str | None) -> Response:
        started = time.perf_counter()
        code: str | None = None
        try:
            if endpoint is not None:
                raise GatewayError(
                    405, f"{request.path} accepts POST only", code="method_not_allowed"
                )
            handler = self._routes.get((request.method, request.path))
            if handler is None:
                known = any(path == request.path for _, path in self._routes)
                if known:
                    raise GatewayError(
                        405, f"{request.path} accepts GET only", code="method_not_allowed"
                    )
                raise GatewayError(404, f"unknown path {request.path[:200]!r}", code="unknown_url")
            response: Response = await handler(request)
            endpoint = "other"
        except GatewayError as error:
            response = _error_response(error)
            code = error.code
            endpoint = endpoint or "other"
        self._record(started, response.status, endpoint, "-", "-")
        if request.path not in _QUIET_PATHS and self.access_log.sampled():
            now = time.perf_counter()
            self._log_call(request, started, now, response.status, code, None, None, None)
        return response

    def _record(self, started: float, status: int, endpoint: str, tier: str, route: str) -> None:
        metrics = self.metrics
        metrics.add(metrics.requests, endpoint, tier, route, status_label(status))
        metrics.observe_latency(time.perf_counter() - started, endpoint, tier)

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
        if compiled is None or self.stopping or self.server.draining:
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
            if state is BreakerState.OPEN and breaker.available(now):
                state = BreakerState.HALF_OPEN  # cooled down: the next call is a probe
            self.metrics.child(self.metrics.circuit, route, target).set(state.value)

    async def _models(self, request: Request) -> Response:
        compiled = self._config()
        tier = authenticate(request.headers.get("authorization"), compiled)
        return Response(200, compiled.models_body[tier.name])

    async def _proxy(self, request: Request, endpoint: str) -> Response | StreamResponse:
        """Read the call, admit it, forward it. The admission is left when the answer is
        complete: at the end of this block for a plain answer, by the relay for a stream."""
        started = time.perf_counter()
        request_id, trace_lines = trace_of(request.headers)
        tier = model = "-"  # the labels of a refused call
        call: Call | None = None
        admission: Admission | None = None
        error_code: str | None = None
        response: Response | StreamResponse
        try:
            call = read_call(request, self._config(), self.settings.max_json_depth)
            call.trace_lines = trace_lines
            assert self._forwarder is not None
            admitted = Handover(Admission(self.admissions, call))
            async with admitted as admission:
                answer = await self._forwarder.forward(call, admission)
                if not isinstance(answer, Served):
                    response = answer
                else:  # a stream: left, and logged, once the answer is written
                    ended = self._stream_ended(request, request_id, started, call, admission)
                    answered = whole_stream if answer.response.finished else relay
                    response = answered(answer, admission, admitted.pop(), ended, call.strip_usage)
        except GatewayError as error:
            response = _error_response(error)
            error_code = error.code
        response.headers.append(("x-request-id", request_id))
        now = time.perf_counter()
        if call is None:
            self.metrics.observe_call(endpoint, tier, model, response.status, now - started)
        else:
            settings = call.settings
            tier = call.tier.name if settings is None else settings.name
            model = call.route.model
            first_token_at = call.first_token_at
            if first_token_at:
                self.metrics.observe_call(
                    endpoint,
                    tier,
                    model,
                    response.status,
                    now - started,
                    first_token_at - started,
                    now - started - call.upstream_seconds,
                )
            else:
                self.metrics.observe_call(endpoint, tier, model, response.status, now - started)
        if isinstance(response, Response) and response.after is None:
            log = self.access_log
            if log.sample >= 1 or log.sampled():
                self._log_call(
                    request, started, now, response.status, error_code, request_id, call, admission
                )
        return response

    def _stream_ended(
        self,
        request: Request,
        request_id: str,
        started: float,
        call: Call,
        admission: Admission,
    ) -> Callable[[str | None], None]:
        def ended(error: str | None) -> None:
            log = self.access_log
            if log.sample >= 1 or log.sampled():  # the common case without a call
                now = time.perf_counter()
                self._log_call(request, started, now, 200, error, request_id, call, admission)

        return ended

    def _log_call(
        self,
        request: Request,
        started: float,
        ended: float,
        status: int,
        error: str | None,
        request_id: str | None,
        call: Call | None,
        admission: Admission | None,
    ) -> None:
        """One access-log line (``time`` first); never a key, only the tier's name.

        Built as one literal, milliseconds as ``us // 1 / 1000`` (the value ``int(us) / 1000``
        gives, without a call): this runs for every request (``round`` and key-by-key building
        cost several times more)."""
        duration_ms = (ended - started) * 1_000_000 // 1 / 1000
        if call is None:
            entry: dict[str, Any] = {
                "time": "",
                "request_id": request_id,
                "method": request.method,
                "path": request.path[:200],
                "status": status,
                "error": error,
                "duration_ms": duration_ms,
            }
        else:
            target: str | None = None
            usage = None
            cost = 0.0
            if admission is not None:
                usage, cost = admission.usage, admission.cost_nano / 1e9
                if admission.target is not None:
                    target = admission.target_name or admission.target.name  # before the settle
            first_token_at, tried, settings = call.first_token_at, call.tried, call.settings
            entry = {
                "time": "",
                "request_id": request_id,
                "method": request.method,
                "path": request.path,
                "status": status,
                "error": error,
                "duration_ms": duration_ms,
                "tier": call.tier.name if settings is None else settings.name,
                "key": call.key_name,
                "route": call.route.model,
                "stream": call.stream,
                "targets": tried,
                "attempts": len(tried),
                "target": target,
                "ttft_ms": (first_token_at - started) * 1_000_000 // 1 / 1000
                if first_token_at
                else None,
                "prompt_tokens": None if usage is None else usage.prompt_tokens,
                "completion_tokens": None if usage is None else usage.completion_tokens,
                "tokens_reported": None if usage is None else usage.reported,
                "cost_usd": cost,
                "upstream_request_id": call.upstream_request_id,
            }
        self.access_log.write(entry)


def create_gateway(
    settings: Settings,
    *,
    config: GatewayConfig | None = None,
    wall_clock: Callable[[], datetime] | None = None,
    rng: random.Random | None = None,
) -> Gateway:
    """The app factory: a new, unstarted gateway with no shared state."""
    return Gateway(settings, config=config, wall_clock=wall_clock, rng=rng)
