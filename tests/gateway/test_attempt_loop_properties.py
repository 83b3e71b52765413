"""The attempt loop under random fault sequences (hypothesis): no breaker probe is ever
leaked, and a healthy target always gets the traffic.

The upstream pool is scripted (a fake of ``UpstreamPool.request``): each attempt ends the
way the drawn script says (an answer, an invalid 200, a failover status, a connect or
protocol error, a timeout, an answer too large, or the client cancelling mid-attempt).
The loopback tests in ``test_failure_isolation.py`` prove the same cases on real sockets.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any, cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.gateway import STARTUP_KEY, config, route, target, tier
from tiergate_contract import RequestClass
from tiergate_gateway.admission import Admission, Admissions
from tiergate_gateway.budget import LocalLedger
from tiergate_gateway.calls import Call
from tiergate_gateway.client import (
    UpstreamConnectError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamTooLarge,
)
from tiergate_gateway.config import compile_config
from tiergate_gateway.credentials import CredentialStore
from tiergate_gateway.errors import GatewayError
from tiergate_gateway.limits import LocalLimiter
from tiergate_gateway.metrics import Metrics
from tiergate_gateway.proxy import Forwarder, Served
from tiergate_gateway.routing import BreakerBoard

OUTCOMES = ("ok", "invalid", "status", "connect", "protocol", "timeout", "too_large", "cancel")
FLAKY = ("x", "y")  # targets that misbehave as drawn; "h" always answers
ANSWER = b'{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":1}}'


class ScriptedResponse:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.headers: dict[str, str] = {"content-type": "application/json"}
        self._body = body
        self.closed = False

    async def read_all(self) -> bytes:
        self.closed = True
        return self._body

    async def read(self) -> bytes:
        body, self._body = self._body, b""
        return body

    def unbounded(self) -> None:
        pass

    def token_arrived(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class ScriptedPool:
    """``request`` ends as ``script[target]`` says; ``h`` (the healthy target) always answers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.script: dict[str, str] = {}
        self.sent: list[str] = []

    async def request(self, endpoint: Any, path: str, headers: bytes, body: bytes, **_: Any) -> Any:
        name = endpoint.host_header.decode().split(".")[0]
        self.sent.append(name)
        outcome = "ok" if name == "h" else self.script[name]
        await asyncio.sleep(0)
        if outcome == "ok":
            return ScriptedResponse(200, ANSWER)
        if outcome == "invalid":
            return ScriptedResponse(200, b"<html>bad gateway</html>")
        if outcome == "status":
            return ScriptedResponse(503, b'{"error":{"message":"busy"}}')
        if outcome == "too_large":
            raise UpstreamTooLarge(1024)
        if outcome == "cancel":
            raise asyncio.CancelledError
        raise {
            "connect": UpstreamConnectError("refused"),
            "protocol": UpstreamProtocolError("reset"),
            "timeout": TimeoutError("the first-byte timeout"),
        }[outcome]


def _route_config(order: list[str]):
    targets = [
        target(name, f"http://{name}.example/v1", priority=index)
        for index, name in enumerate(order)
    ]
    return compile_config(
        config(
            [route("m", *targets, failures=2, cooldown=0.001, max_attempts=3)],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.permutations(["x", "y", "h"]),
    calls=st.lists(
        st.fixed_dictionaries({name: st.sampled_from(OUTCOMES) for name in FLAKY}),
        min_size=1,
        max_size=25,
    ),
)
def test_no_probe_leaks_and_the_healthy_target_is_always_reached(
    order: list[str], calls: list[dict[str, str]]
) -> None:
    asyncio.run(_drive(order, calls))


async def _drive(order: list[str], calls: list[dict[str, str]]) -> None:
    compiled = _route_config(order)
    compiled_route = compiled.routes["m"]
    tier_ = compiled.config.tiers[0]
    pool = ScriptedPool(asyncio.get_running_loop())
    breakers = BreakerBoard()
    metrics = Metrics()
    forwarder = Forwarder(
        cast(UpstreamPool, pool),
        CredentialStore(Path("/nonexistent")),
        breakers,
        metrics,
        random.Random(0),
    )
    admissions = Admissions(LocalLimiter(), LocalLedger(), metrics, lambda: "2026-12")
    for script in calls:
        pool.script = script
        pool.sent.clear()
        await asyncio.sleep(0.002)  # past the cooldown: open breakers offer a probe
        call = Call(
            "/v1/chat/completions",
            {"model": "m", "messages": []},
            False,
            tier_,
            compiled_route,
            RequestClass.STANDARD,
            1,
            16,
        )
        admission = Admission(admissions, call)
        refused: str | None = None
        try:
            answer = await forwarder.forward(call, admission)
        except asyncio.CancelledError:
            answer = None  # the client left mid-attempt
        except GatewayError as error:
            # Only a drawn outcome that stops the loop (an answer too large) may end a call
            # before the healthy target; never "no healthy upstream".
            refused = error.code
            answer = None
        assert refused in (None, "upstream_response_too_large"), (script, pool.sent)
        # No probe outlives its call: every breaker is free for the next one.
        for _, breaker in breakers.items():
            assert not breaker.probing, (script, pool.sent)
        if answer is None:
            continue
        status = answer.response.status if isinstance(answer, Served) else answer.status
        assert status == 200, (script, pool.sent)  # some target answered, h at the latest
        # The loop reached h unless something before it was served or stopped it.
        stopped_early = any(
            script[name] in ("ok", "cancel", "too_large") for name in pool.sent if name != "h"
        )
        assert "h" in pool.sent or stopped_early, (order, script, pool.sent)
