"""Upstream calls with failover: ``attempt`` tries one target, ``forward`` tries them in plan order."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

import orjson

from tiergate_contract import Hedge, Target

from .admission import Admission
from .calls import Call, HedgeLoser
from .client import (
    OutOfFiles,
    UpstreamConnectError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTooLarge,
    header_lines,
)
from .config import TierSettings
from .credentials import CredentialStore
from .errors import GatewayError
from .exhaustion import exhausted_for
from .metrics import Metrics
from .routing import Breaker, BreakerBoard, BreakerState, plan
from .server import Response
from .usage import Usage, usage_of

__all__ = ["Attempt", "Failed", "Forwarder", "InvalidAnswer", "Served"]

_log = logging.getLogger("tiergate_gateway.proxy")


@dataclass(slots=True)
class Served:
    """The upstream answered: relay its answer.

    ``forward`` hands a served stream on as it is (its head and first chunk read, the rest
    for the relay); a plain answer becomes a ``Response``.
    """

    response: UpstreamResponse  # head read
    body: bytes  # the whole body; for a stream, what came up to its first data event
    usage: Usage | None = None  # a plain 2xx answer's reported usage


@dataclass(slots=True)
class Failed:
    """No answer to relay: try the next target (``retry``) or stop here."""

    retry: bool  # False: a timeout without ``failover.on_timeout``
    error: GatewayError | None = None  # the gateway's answer when no upstream answered
    upstream: UpstreamResponse | None = None  # else the upstream's answer (a failover status)
    body: bytes = b""  # that answer's body
    sent: bool = True  # False: nothing went out (the target's credential is missing)


Attempt = Served | Failed


@dataclass(slots=True)
class _Sent:
    """How far a hedged attempt got: what its upstream may bill for it if it loses."""

    prompt_tokens: int = 0  # estimated from the body sent (0: nothing was sent)
    completion_tokens: int = 0  # data events that reached the gateway
    # Started by the hedge timer: its first token is known only when it beat another attempt
    # (the fast ones), so its latency is no sample for routing.
    raced: bool = False


def _data_events(data: bytes) -> int:
    return data.count(b"data:") - data.count(b"data: [DONE]")


_NEVER = float("inf")
# The pool's ticker notices a deadline up to one tick late: a timeout this close to the
# request's deadline was the request's.
_TICK_SLACK = 0.05
# Bytes a stream may send before its first data event (comments, keep-alives) and still be
# taken for an answer.
_MAX_PREAMBLE_BYTES = 1024 * 1024


class InvalidAnswer(Exception):
    """A 2xx the client could not use: not JSON, an error object, or a stream without events."""


def _usage_of_answer(body: bytes) -> Usage | None:
    """The usage of a plain 2xx answer; ``InvalidAnswer`` if it is not an OpenAI answer."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidAnswer(f"a body that is not JSON ({len(body)} bytes)") from None
    if not isinstance(answer, dict):
        raise InvalidAnswer("a JSON body that is not an object")
    if "error" in answer and "choices" not in answer and "data" not in answer:
        raise InvalidAnswer("an error object")
    return usage_of(answer)


async def _first_event(response: UpstreamResponse) -> bytes:
    """What a stream sends up to and including its first complete data line, checked."""
    body = b""
    while True:
        chunk = await response.read()
        if not chunk:
            raise InvalidAnswer("a stream that ended before its first event")
        body += chunk
        at = body.find(b"data:")
        while at > 0 and body[at - 1 : at] != b"\n":  # only at the start of a line
            at = body.find(b"data:", at + 1)
        end = body.find(b"\n", at) if at >= 0 else -1
        if end >= 0:
            break
        if len(body) > _MAX_PREAMBLE_BYTES:
            raise InvalidAnswer("a stream without a data event in its first 1 MiB")
    try:
        event = orjson.loads(body[at + 5 : end])  # JSON allows the spaces around it
    except orjson.JSONDecodeError:
        raise InvalidAnswer("a stream whose first event is not JSON") from None
    if not isinstance(event, dict) or ("error" in event and "choices" not in event):
        raise InvalidAnswer("a stream whose first event is an error")
    return body


def _reported(failure: Failed | None, attempt: Failed) -> Failed:
    """The failure the client hears of: the last one, except that a missing credential (nothing
    was sent) does not hide an upstream's own answer."""
    if attempt.sent or failure is None or failure.upstream is None:
        return attempt
    return failure


def _out_of_files() -> GatewayError:
    return GatewayError(
        503,
        "the gateway has no open file left for an upstream connection; retry shortly",
        type_="server_error",
        code="gateway_out_of_files",
        headers=[("retry-after", "1")],
    )


def _request_deadline_passed(model: str) -> GatewayError:
    return GatewayError(
        504,
        f"the request to {model!r} ran out of time (the route's timeouts.requestSeconds)",
        type_="upstream_error",
        code="request_timeout",
    )


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


class Forwarder:
    """Sends admitted calls upstream: plans the targets, tries them, keeps their breakers."""

    def __init__(
        self,
        pool: UpstreamPool,
        credentials: CredentialStore,
        breakers: BreakerBoard,
        metrics: Metrics,
        rng: random.Random,
        max_response_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self._max_response_bytes = max_response_bytes
        self._pool = pool
        self._credentials = credentials
        self._breakers = breakers
        self._metrics = metrics
        self._rng = rng

    async def forward(self, call: Call, admission: Admission) -> Response | Served:
        """The first answer of the planned targets; records on ``admission`` who served."""
        compiled = call.route
        board = self._breakers.for_route(compiled.model, compiled.targets, compiled.circuit_breaker)
        routing = call.settings or TierSettings.of(call.tier)
        targets = plan(
            compiled.groups[call.request_class],
            board,
            time.monotonic(),
            self._rng,
            routing.strategy,
            compiled.blended_prices,
        )
        request_seconds = compiled.request_seconds
        request_deadline = (
            _NEVER if request_seconds is None else self._pool.loop.time() + request_seconds
        )
        result: Failed | None = None
        if routing.hedge is not None:
            raced = await self._race(call, targets, board, request_deadline, routing.hedge)
            if isinstance(raced, tuple):
                return _served(call, *raced, admission)
            result = raced
        else:  # one target after the other (inline: one coroutine less per call)
            max_attempts = compiled.max_attempts
            for target in targets:
                if len(call.tried) == max_attempts:
                    break
                name = target.name
                breaker = board[name]
                if not breaker.acquire(time.monotonic()):
                    continue
                # From here the breaker's probe (if this is one) is the attempt's to resolve:
                # it does, on every path, before anything else can raise.
                attempt = await self.attempt(call, target, breaker, request_deadline)
                if call.tried:
                    self._failover(call, target)
                call.tried.append(name)
                if isinstance(attempt, Served):
                    return _served(call, attempt, target, admission)
                result = _reported(result, attempt)
                if not attempt.retry:
                    break
        if result is None:
            raise GatewayError(
                503,
                f"no healthy upstream for model {compiled.model!r} (circuit breakers open)",
                type_="upstream_error",
                code="no_healthy_upstream",
                headers=[("retry-after", "1")],
            )
        if result.upstream is not None:
            return _passthrough(result.upstream, result.body, admission.headers)
        assert result.error is not None
        raise result.error

    async def _race(
        self,
        call: Call,
        targets: list[Target],
        board: dict[str, Breaker],
        request_deadline: float,
        hedge: Hedge,
    ) -> tuple[Served, Target] | Failed | None:
        """Hedged: with no first token ``hedge.after_ms`` after the last start, the next target
        is asked too (``hedge.max_extra`` times at most); the first first token wins and the
        other attempts are cancelled (their breakers get no verdict; their targets are noted
        in ``call.hedge_losers``, each charged the prompt it was sent and the data events
        that had reached the gateway when it was cut)."""
        loop, metrics = self._pool.loop, self._metrics
        route = call.route.route
        queue = iter(targets)
        running: dict[asyncio.Task[Attempt], tuple[Target, _Sent]] = {}
        failure: Failed | None = None
        hedges_left = hedge.max_extra
        stopped = False  # a failure that must not be retried elsewhere

        def launch(failover: bool, raced: bool = False) -> bool:
            if stopped:
                return False
            for target in queue:
                if len(call.tried) == route.failover.max_attempts:
                    return False
                breaker = board[target.name]
                if not breaker.acquire(time.monotonic()):
                    continue
                sent = _Sent(raced=raced)
                task = loop.create_task(self.attempt(call, target, breaker, request_deadline, sent))
                running[task] = (target, sent)
                if call.tried and failover:
                    self._failover(call, target)
                call.tried.append(target.name)
                return True
            return False

        try:
            launch(failover=False)
            while running:
                timeout = hedge.after_ms / 1000 if hedges_left else None
                done, _ = await asyncio.wait(
                    running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:  # no first token in time: ask the next target too
                    hedges_left -= 1
                    if launch(failover=False, raced=True):
                        metrics.add(metrics.hedges, call.tier.name, route.model)
                    continue
                winner: tuple[Served, Target] | None = None
                for task in done:
                    target, sent = running.pop(task)
                    attempt = task.result()
                    if isinstance(attempt, Served):
                        if winner is None:
                            winner = (attempt, target)
                        else:  # two first tokens at once: the later one is dropped
                            call.hedge_losers += (_dropped(target, sent, attempt),)
                        continue
                    failure = _reported(failure, attempt)
                    stopped = stopped or not attempt.retry
                if winner is not None:
                    if winner[1].name != call.tried[0]:
                        metrics.add(metrics.hedge_wins, call.tier.name, route.model)
                    return winner
                if not running:
                    launch(failover=True)
            return failure
        finally:
            if running:
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                losers = []
                for task, (target, sent) in running.items():
                    ended = task.cancelled() or task.exception() is not None
                    result = None if ended else task.result()
                    if isinstance(result, Served):  # it served between the wait and its cancel
                        losers.append(_dropped(target, sent, result))
                    elif sent.prompt_tokens:
                        losers.append(
                            HedgeLoser(target.name, sent.prompt_tokens, sent.completion_tokens)
                        )
                call.hedge_losers += tuple(losers)

    def _failover(self, call: Call, target: Target) -> None:
        """An attempt on ``target`` after the last one failed: a metric and a warning."""
        route, previous = call.route.route.model, call.tried[-1]
        self._metrics.add(self._metrics.failovers, route, previous)
        _log.warning(
            "failover on route %s: %s -> %s",
            route,
            previous,
            target.name,
            extra={"cause": f"failover {route} {previous}"},
        )

    async def attempt(
        self,
        call: Call,
        target: Target,
        breaker: Breaker,
        request_deadline: float = _NEVER,
        sent: _Sent | None = None,
    ) -> Attempt:
        """Send the call to one target; its breaker and metrics learn how it went.

        The attempt has its own deadlines (``timeouts``, counted from its start), cut short by
        ``request_deadline`` (loop time). Only an attempt that was sent and failed on the
        target's side counts against the breaker; one that was not sent, or that the gateway,
        the client or the request's deadline ended, leaves it as it was (a probe is given back).
        ``sent`` (a hedged attempt's) learns what went out and what came back before a cut.
        """
        breaker.outstanding += 1
        response: UpstreamResponse | None = None
        started = 0.0
        try:
            route = call.route  # its settings copied out of the pydantic models
            loop = self._pool.loop
            started_at = loop.time()
            if started_at >= request_deadline:
                breaker.abandon()
                return Failed(False, _request_deadline_passed(route.model), sent=False)
            deadline = started_at + route.total_seconds
            if request_deadline < deadline:
                deadline = request_deadline
            settings = call.settings or TierSettings.of(call.tier)
            ref = settings.credential or target.credential
            credential = self._credentials.get(ref) if ref is not None else None
            if ref is not None and credential is None:
                breaker.abandon()  # nothing was sent: says nothing of the target's health
                self._metrics.add(
                    self._metrics.attempts, route.model, target.name, "credential_missing"
                )
                error = GatewayError(
                    502,
                    f"upstream credential for target {target.name!r} is not available",
                    type_="upstream_error",
                    code="upstream_credential_missing",
                )
                return Failed(True, error, sent=False)
            # Encoded per attempt: a failover may change the model; most calls make one attempt.
            upstream_model = route.upstream_model or target.upstream_model  # a catalog's
            call.payload["model"] = settings.model_prefix + upstream_model
            try:
                payload = orjson.dumps(call.payload)
            except orjson.JSONEncodeError as exc:
                breaker.abandon()  # nothing was sent: no verdict on the target
                raise GatewayError(
                    400, f"request body cannot be sent upstream: {exc}", code="invalid_json"
                ) from None
            if sent is not None:
                sent.prompt_tokens = max(1, len(payload) // 4)  # as calls.py estimates a prompt
            started = time.perf_counter()
            usage: Usage | None = None
            try:
                response = await self._pool.request(
                    route.endpoints[target.name],
                    call.path[3:],  # base_url includes the API version, as in the openai SDK
                    _header_block(credential, call.stream) + call.trace_lines,
                    payload,
                    connect_timeout=min(route.connect_seconds, deadline - started_at),
                    first_byte_timeout=route.first_byte_seconds,
                    first_token_timeout=route.first_token_seconds,
                    deadline=deadline,
                    max_body_bytes=self._max_response_bytes,
                )
                status, headers = response.status, response.headers
                if (
                    status == 429
                    or status == 503
                    or "x-ratelimit-remaining-requests" in headers
                    or "x-ratelimit-remaining-tokens" in headers
                ):
                    wait = exhausted_for(status, headers)
                    if wait:
                        breaker.exhausted_until = time.monotonic() + wait
                if response.status in route.failover_statuses:
                    body = await response.read_all()
                    self._failed(route.model, target, breaker, f"status_{response.status // 100}xx")
                    return Failed(True, upstream=response, body=body)
                if call.stream and response.status == 200:
                    response.unbounded()
                    body = await _first_event(response)
                    response.token_arrived()
                else:  # read whole: no deadline is watched any more
                    body = await response.read_all()
                    if 200 <= response.status < 300:
                        usage = _usage_of_answer(body)
            except UpstreamTooLarge as exc:
                # The answer is too large for any target, not a sign of an unhealthy one.
                breaker.abandon()
                self._metrics.add(self._metrics.attempts, route.model, target.name, "too_large")
                error = GatewayError(
                    502,
                    f"upstream {target.name!r} answered with more than {exc.limit} bytes",
                    type_="upstream_error",
                    code="upstream_response_too_large",
                )
                return Failed(False, error)
            except InvalidAnswer as exc:
                if response is not None:
                    response.close()  # not read to its end: the connection is dropped
                self._failed(route.model, target, breaker, "invalid_answer")
                error = GatewayError(
                    502,
                    f"upstream {target.name!r} answered 200 with {exc}",
                    type_="upstream_error",
                    code="upstream_invalid_answer",
                )
                return Failed(True, error)
            except OutOfFiles:
                # The gateway's own limit: no verdict on the target, and no other target
                # would fare better.
                breaker.abandon()
                self._metrics.add(self._metrics.attempts, route.model, target.name, "out_of_files")
                return Failed(False, _out_of_files(), sent=False)
            except (UpstreamConnectError, UpstreamProtocolError) as exc:
                connect = isinstance(exc, UpstreamConnectError)
                self._failed(
                    route.model, target, breaker, "connect_error" if connect else "protocol_error"
                )
                error = GatewayError(
                    502,
                    f"upstream {target.name!r} failed: {exc}",
                    type_="upstream_error",
                    code="upstream_unavailable",
                )
                return Failed(True, error)
            except TimeoutError as exc:
                if loop.time() >= request_deadline - _TICK_SLACK:
                    # The request's own deadline ended it: no verdict on the target, no next one.
                    breaker.abandon()
                    self._metrics.add(self._metrics.attempts, route.model, target.name, "deadline")
                    return Failed(False, _request_deadline_passed(route.model))
                self._failed(route.model, target, breaker, "timeout")
                breaker.observe_latency(time.perf_counter() - started, time.monotonic())
                error = GatewayError(
                    504,
                    f"upstream {target.name!r} timed out: {exc}",
                    type_="upstream_error",
                    code="upstream_timeout",
                )
                return Failed(route.on_timeout, error)
            finally:
                now = time.perf_counter()
                call.upstream_seconds += now - started
            call.first_token_at = now
            call.upstream_request_id = response.headers.get("x-request-id")
            if sent is None or not sent.raced:
                breaker.observe_latency(now - started, time.monotonic())
            recovered = breaker.success()
            metrics = self._metrics
            metrics.add(metrics.attempts, route.model, target.name, "ok")
            if recovered:  # the gauge is written when the state changed, not on every success
                metrics.child(metrics.circuit, route.model, target.name).set(breaker.state.value)
                _log.warning(
                    "circuit of target %s on route %s closed: it answered again",
                    target.name,
                    route.model,
                    extra={"cause": f"circuit {route.model} {target.name}"},
                )
            return Served(response, body, usage)
        except BaseException as exc:
            breaker.abandon()  # e.g. the client left: no verdict on the target
            unread = 0
            if response is not None:
                # Cut after its head (a hedge that lost, a client that left): the upstream
                # connection is closed, not left streaming into a buffer nobody reads.
                unread = response.unread_events()
                if sent is not None:
                    sent.completion_tokens += unread
                response.close()
            if sent is None and started and isinstance(exc, asyncio.CancelledError):
                # The client left while this attempt was out: its upstream bills the prompt it
                # read (and what it streamed), so the call is charged as a hedge that lost.
                call.hedge_losers += (HedgeLoser(target.name, max(1, len(payload) // 4), unread),)
            if started:
                # Cut before its first token: it would have taken at least this long, which
                # routing learns when that is more than its estimate (else nothing is known).
                waited = time.perf_counter() - started
                if waited > breaker.latency:
                    breaker.observe_latency(waited, time.monotonic())
            raise
        finally:
            breaker.outstanding -= 1

    def _failed(self, route: str, target: Target, breaker: Breaker, outcome: str) -> None:
        before = breaker.state
        breaker.failure(time.monotonic())
        metrics = self._metrics
        metrics.add(metrics.attempts, route, target.name, outcome)
        metrics.child(metrics.circuit, route, target.name).set(breaker.state.value)
        if breaker.state is not before and breaker.state is BreakerState.OPEN:
            _log.warning(
                "circuit of target %s on route %s opened after %s (%d failures in a row)",
                target.name,
                route,
                outcome,
                breaker.failures,
                extra={"cause": f"circuit {route} {target.name}"},
            )


def _dropped(target: Target, sent: _Sent, served: Served) -> HedgeLoser:
    """A hedged attempt that served when another had won already: closed, and charged what
    it sent before that."""
    response = served.response
    streamed = _data_events(served.body) + response.unread_events()
    response.close()
    return HedgeLoser(target.name, sent.prompt_tokens, sent.completion_tokens + streamed)


def _served(call: Call, served: Served, target: Target, admission: Admission) -> Response | Served:
    response = served.response
    admission.target = target
    if call.stream and response.status == 200:
        return served  # its usage is the relay's to record
    if 200 <= response.status < 300:
        admission.usage = served.usage  # None: settled with the estimate
    else:
        admission.usage = Usage(0, 0, True)  # a refused call (e.g. upstream 400) costs nothing
    return _passthrough(response, served.body, admission.headers)


def _passthrough(
    response: UpstreamResponse, data: bytes, headers: list[tuple[str, str]]
) -> Response:
    extra = list(headers)
    upstream_id = response.headers.get("x-request-id")
    if upstream_id is not None:
        extra.append(("x-upstream-request-id", upstream_id))
    retry_after = response.headers.get("retry-after")
    if retry_after is not None and response.status in (429, 503):
        extra.append(("retry-after", retry_after))
    return Response(
        response.status, data, extra, response.headers.get("content-type", "application/json")
    )
