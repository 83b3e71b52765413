"""Upstream calls with failover: tries targets in plan order, streams SSE through unbuffered."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from tiergate_contract import Target, Tier

from .client import (
    UpstreamConnectError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamResponse,
    header_lines,
)
from .config import CompiledRoute
from .credentials import CredentialStore
from .errors import GatewayError, envelope
from .metrics import Metrics
from .routing import Breaker
from .server import Response, StreamResponse

__all__ = ["Outcome", "Usage", "forward"]


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    reported: bool


@dataclass(slots=True)
class Outcome:
    """What a finished call did, for settling limits, budgets and metrics."""

    target: Target | None = None
    usage: Usage | None = None


Finish = Callable[[Outcome], Awaitable[None]]


def usage_of(data: object) -> Usage | None:
    if not isinstance(data, dict):
        return None
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(max(0, prompt), max(0, completion), True)


class _UsageScanner:
    """Finds the last ``usage`` object in an SSE stream without buffering the stream.

    Only the last complete line naming ``"usage"`` in each piece is parsed: OpenAI sends
    ``"usage":null`` in every chunk and the totals in the last one, and a ``"usage"`` inside
    generated text is escaped (``\\"usage\\"``), so it never matches.
    """

    __slots__ = ("carry", "usage")

    def __init__(self) -> None:
        self.carry = b""
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> None:
        data = self.carry + chunk if self.carry else chunk
        cut = data.rfind(b"\n")
        self.carry = data[cut + 1 :] if cut >= 0 else data
        if len(self.carry) > 65536:
            self.carry = b""
        at = data.rfind(b'"usage"', 0, cut)
        if at < 0:
            return
        line = data[data.rfind(b"\n", 0, at) + 1 : data.find(b"\n", at)]
        if not line.startswith(b"data:"):
            return
        try:
            found = usage_of(orjson.loads(line[5:]))
        except orjson.JSONDecodeError:
            return
        if found is not None:
            self.usage = found


@dataclass(slots=True)
class Call:
    """One client request, ready to send: what, where to, and its headers back to the client."""

    path: str
    payload: dict[str, object]
    stream: bool
    tier: Tier
    route: CompiledRoute
    candidates: list[Target]
    breakers: dict[str, Breaker]  # by target name
    headers: list[tuple[str, str]] = field(default_factory=list)


_BASE_HEADERS = {
    stream: header_lines(
        [("content-type", "application/json"), ("user-agent", "tiergate-gateway")]
        + ([("accept", "text/event-stream")] if stream else [])
    )
    for stream in (False, True)
}


def _header_block(credential: str | None, stream: bool) -> bytes:
    if credential is None:
        return _BASE_HEADERS[stream]
    return _BASE_HEADERS[stream] + b"authorization: Bearer %s\r\n" % credential.encode(
        "latin-1", "replace"
    )


class _Relay:
    """The body of a streamed answer; closing it (always) closes the upstream and settles the call."""

    def __init__(
        self,
        first: bytes,
        response: UpstreamResponse,
        deadline: float,
        outcome: Outcome,
        finish: Finish,
    ) -> None:
        self._pending: bytes | None = first
        self._response = response
        self._deadline = deadline
        self._outcome = outcome
        self._finish = finish
        self._scanner = _UsageScanner()
        self._done = False
        self._chunks = 0

    @property
    def exhausted(self) -> bool:
        """Would the next ``__anext__`` end the stream? (Lets the server send the end with the last chunk.)"""
        return self._done or (self._pending is None and self._response.finished)

    def __aiter__(self) -> _Relay:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        if self._pending is not None:
            chunk, self._pending = self._pending, None
        else:
            try:
                chunk = await self._response.read()
            except (TimeoutError, UpstreamProtocolError) as exc:
                self._done = True
                reason = "timed out" if isinstance(exc, TimeoutError) else "broke off"
                return (
                    b"data: "
                    + envelope(
                        f"the upstream stream {reason}",
                        "upstream_error",
                        "upstream_stream_interrupted",
                    )
                    + b"\n\n"
                )
            if not chunk:
                self._done = True
                raise StopAsyncIteration
        self._chunks += 1
        self._scanner.feed(chunk)
        return chunk

    async def aclose(self) -> None:
        if self._outcome.usage is not None:
            return
        self._response.close()
        self._outcome.usage = self._scanner.usage or Usage(0, self._chunks, False)
        await self._finish(self._outcome)


async def forward(
    call: Call,
    *,
    pool: UpstreamPool,
    credentials: CredentialStore,
    metrics: Metrics,
    finish: Finish,
) -> Response | StreamResponse:
    """Try the planned targets in order; ``finish`` is awaited exactly once with the outcome."""
    route = call.route.route
    failover, timeouts = route.failover, route.timeouts
    loop = pool.loop
    deadline = loop.time() + timeouts.total_seconds
    outcome = Outcome()
    attempts = 0
    last_error: GatewayError | None = None
    last_upstream: Response | None = None
    handed_over = False
    previous = ""
    try:
        for target in call.candidates:
            if attempts >= failover.max_attempts:
                break
            breaker = call.breakers[target.name]
            if not breaker.acquire(time.monotonic()):
                continue
            if attempts:
                metrics.add(metrics.failovers, route.model, previous)
            attempts += 1
            previous = target.name
            ref = call.tier.upstream.credential or target.credential
            credential = credentials.get(ref) if ref is not None else None
            if ref is not None and credential is None:
                breaker.failure(time.monotonic())
                _attempt(metrics, route.model, target, "credential_missing", breaker)
                last_error = GatewayError(
                    502,
                    f"upstream credential for target {target.name!r} is not available",
                    type_="upstream_error",
                    code="upstream_credential_missing",
                )
                continue
            upstream_model = call.tier.upstream.model_prefix + target.upstream_model
            # Encoded per attempt: a failover may change the model; most calls make one attempt.
            call.payload["model"] = upstream_model
            payload = orjson.dumps(call.payload)
            endpoint = call.route.endpoints[target.name]
            try:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                response = await pool.request(
                    endpoint,
                    call.path[3:],  # base_url includes the API version, as in the openai SDK
                    _header_block(credential, call.stream),
                    payload,
                    connect_timeout=min(timeouts.connect_seconds, remaining),
                    first_byte_timeout=timeouts.first_byte_seconds,
                    deadline=deadline,
                )
                if response.status in failover.statuses:
                    error_body = await response.read_all()
                    breaker.failure(time.monotonic())
                    _attempt(
                        metrics,
                        route.model,
                        target,
                        f"status_{response.status // 100}xx",
                        breaker,
                    )
                    last_upstream = _passthrough(response, error_body, call.headers)
                    last_error = None
                    continue
                if not call.stream or response.status != 200:
                    data = await response.read_all()
                    first = b""
                else:
                    first = await response.read()
                    if not first:
                        raise UpstreamProtocolError("upstream stream ended before its first byte")
            except (UpstreamConnectError, UpstreamProtocolError) as exc:
                breaker.failure(time.monotonic())
                kind = (
                    "connect_error" if isinstance(exc, UpstreamConnectError) else "protocol_error"
                )
                _attempt(metrics, route.model, target, kind, breaker)
                last_error = GatewayError(
                    502,
                    f"upstream {target.name!r} failed: {exc}",
                    type_="upstream_error",
                    code="upstream_unavailable",
                )
                last_upstream = None
                continue
            except TimeoutError:
                breaker.failure(time.monotonic())
                _attempt(metrics, route.model, target, "timeout", breaker)
                last_error = GatewayError(
                    504,
                    f"upstream {target.name!r} timed out",
                    type_="upstream_error",
                    code="upstream_timeout",
                )
                last_upstream = None
                if not failover.on_timeout:
                    break
                continue
            except BaseException:
                breaker.abandon()
                raise
            recovered = breaker.state != 0
            breaker.success()
            _attempt(metrics, route.model, target, "ok", breaker, changed=recovered)
            outcome.target = target
            if call.stream and response.status == 200:
                relay = _Relay(first, response, deadline, outcome, finish)
                handed_over = True
                return StreamResponse(
                    200,
                    relay,
                    call.headers,
                    response.headers.get("content-type", "text/event-stream"),
                )
            if 200 <= response.status < 300:
                try:
                    outcome.usage = usage_of(orjson.loads(data))
                except orjson.JSONDecodeError:
                    outcome.usage = None  # settled with the estimate
            else:
                outcome.usage = Usage(
                    0, 0, True
                )  # a refused call (e.g. upstream 400) costs nothing
            return _passthrough(response, data, call.headers)
        if last_upstream is not None:
            return last_upstream
        if last_error is not None:
            raise last_error
        raise GatewayError(
            503,
            f"no healthy upstream for model {route.model!r} (circuit breakers open)",
            type_="upstream_error",
            code="no_healthy_upstream",
            headers=[("retry-after", "1")],
        )
    finally:
        if not handed_over:
            await finish(outcome)


def _passthrough(
    response: UpstreamResponse, data: bytes, headers: list[tuple[str, str]]
) -> Response:
    extra = list(headers)
    retry_after = response.headers.get("retry-after")
    if retry_after is not None and response.status in (429, 503):
        extra.append(("retry-after", retry_after))
    return Response(
        response.status, data, extra, response.headers.get("content-type", "application/json")
    )


def _attempt(
    metrics: Metrics,
    route: str,
    target: Target,
    outcome: str,
    breaker: Breaker,
    changed: bool = True,
) -> None:
    metrics.add(metrics.attempts, route, target.name, outcome)
    if changed:  # the gauge is written when the state may have changed, not on every success
        metrics.child(metrics.circuit, route, target.name).set(int(breaker.state))
