"""Building configs and running gateways for the tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import uvloop

from tiergate_contract import (
    Budget,
    Catalog,
    CatalogModel,
    CatalogPattern,
    CatalogTarget,
    CircuitBreaker,
    CredentialRef,
    Failover,
    GatewayConfig,
    Limits,
    Pricing,
    RequestClass,
    Route,
    Target,
    Tier,
    TierCatalog,
    TierRouting,
    TierUpstream,
    Timeouts,
    canonical_json,
    hash_client_key,
    seal,
)
from tiergate_gateway.__main__ import serve
from tiergate_gateway.settings import Settings

STARTUP_KEY = "sk-startup-0123456789"
ACME_KEY = "sk-acme-abcdefghij"
ROOT = Path(__file__).resolve().parents[2]


def target(
    name: str,
    base_url: str,
    *,
    weight: int = 100,
    priority: int = 0,
    premium: bool = False,
    credential: tuple[str, str] | None = None,
    price: tuple[str, str] = ("1", "2"),
    upstream_model: str | None = None,
) -> Target:
    return Target(
        name=name,
        base_url=base_url,
        upstream_model=upstream_model or f"{name}-model",
        weight=weight,
        priority=priority,
        request_class=RequestClass.PREMIUM if premium else RequestClass.STANDARD,
        pricing=Pricing(input_per_million=Decimal(price[0]), output_per_million=Decimal(price[1])),
        credential=CredentialRef(secret=credential[0], key=credential[1]) if credential else None,
    )


def route(
    model: str,
    *targets: Target,
    failures: int = 5,
    cooldown: float = 30.0,
    first_byte: float = 10.0,
    total: float = 30.0,
    first_token: float | None = None,
    request: float | None = None,
    max_attempts: int = 3,
    statuses: tuple[int, ...] = (429, 500, 502, 503, 504),
) -> Route:
    return Route(
        model=model,
        targets=targets,
        failover=Failover(
            statuses=statuses,
            max_attempts=max_attempts,
            circuit_breaker=CircuitBreaker(
                consecutive_failures=failures, cooldown_seconds=cooldown
            ),
        ),
        timeouts=Timeouts(
            connect_seconds=2,
            first_byte_seconds=first_byte,
            first_token_seconds=first_token,
            total_seconds=total,
            request_seconds=request,
        ),
    )


def tier(
    name: str,
    key: str,
    models: list[str],
    *,
    limits: Limits | None = None,
    budget: tuple[str, str] | None = None,
    credential: tuple[str, str] | None = None,
    prefix: str = "",
    premium: bool = False,
    routing: TierRouting | None = None,
) -> Tier:
    return Tier(
        name=name,
        key_sha256=(hash_client_key(key),),
        models=tuple(models),
        default_class=RequestClass.PREMIUM if premium else RequestClass.STANDARD,
        limits=limits or Limits(),
        budget=Budget(soft_usd=Decimal(budget[0]), hard_usd=Decimal(budget[1])) if budget else None,
        upstream=TierUpstream(
            credential=CredentialRef(secret=credential[0], key=credential[1])
            if credential
            else None,
            model_prefix=prefix,
        ),
        routing=routing or TierRouting(),
    )


def price(input_per_million: str, output_per_million: str) -> Pricing:
    return Pricing(
        input_per_million=Decimal(input_per_million), output_per_million=Decimal(output_per_million)
    )


def catalog(
    name: str,
    targets: list[tuple[str, str, int]],
    models: dict[str, tuple[str, str] | tuple[str, str, str]],
    patterns: dict[str, tuple[str, str] | None] | None = None,
    default: tuple[str, str] = ("0", "0"),
    failures: int = 5,
) -> Catalog:
    """``targets``: (name, base URL, priority); ``models``: name -> (input, output[, upstream
    name]) price per million; ``patterns``: prefix -> price or None (the default)."""
    return Catalog(
        name=name,
        targets=tuple(
            CatalogTarget(name=n, base_url=url, weight=100, priority=prio)
            for n, url, prio in targets
        ),
        models=tuple(
            CatalogModel(
                model=model,
                pricing=price(spec[0], spec[1]),
                upstream_model=spec[2] if len(spec) == 3 else None,
            )
            for model, spec in models.items()
        ),
        patterns=tuple(
            CatalogPattern(prefix=prefix, pricing=price(*p) if p else None)
            for prefix, p in (patterns or {}).items()
        ),
        default_pricing=price(*default),
        failover=Failover(circuit_breaker=CircuitBreaker(consecutive_failures=failures)),
        timeouts=Timeouts(connect_seconds=2, first_byte_seconds=10, total_seconds=30),
    )


def tier_catalog(name: str, *only: str) -> TierCatalog:
    return TierCatalog(name=name, only=only)


def config(
    routes: list[Route], tiers: list[Tier], catalogs: list[Catalog] | None = None
) -> GatewayConfig:
    return seal(
        gateway="test", namespace="default", routes=routes, tiers=tiers, catalogs=catalogs or ()
    )


def raw_completion_request(body: bytes, key: str = STARTUP_KEY) -> bytes:
    """The bytes of a chat-completion POST with ``body``, for tests that speak HTTP by hand."""
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
        % (key.encode(), len(body), body)
    )


def write_config(path: Path, cfg: GatewayConfig | bytes) -> None:
    """Replace the file the way Kubernetes does: write a new file, then rename it over the old."""
    data = cfg if isinstance(cfg, bytes) else canonical_json(cfg)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatewayThread:
    """A real gateway server on 127.0.0.1, in its own thread and uvloop event loop."""

    def __init__(self, settings: Settings, cfg: GatewayConfig | None = None) -> None:
        self.settings = settings
        self.cfg = cfg
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self.error: BaseException | None = None
        # Answers a test breaks on purpose by injecting a fault into the gateway's own code.
        self.expected_internal_errors = 0

    def _run(self) -> None:
        loop = uvloop.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            await serve(self.settings, self.cfg, self._stop, on_ready=self._on_ready)

        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by start()/stop()
            self.error = exc
            self._ready.set()
        finally:
            loop.close()

    def _on_ready(self, port: int) -> None:
        self.port = port
        self._ready.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayThread:
        self._thread.start()
        assert self._ready.wait(15), "gateway did not start"
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        """Stop the gateway; fails if it broke an answer itself (a gateway-made 500)."""
        internal = internal_errors(self.url) if self._thread.is_alive() and self.port else 0
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        expected = self.expected_internal_errors
        assert internal == expected, (
            f"the gateway broke {internal} answers itself ({expected} meant)"
        )


class GatewayProcess:
    """The ``tiergate-gateway`` CLI as a subprocess (for signals and multi-process tests).

    Its output (the access log on stdout, its own log on stderr) goes to a file, not a pipe:
    a pipe nobody reads would fill and stall the gateway. ``stop`` returns that output and
    fails if the gateway broke an answer itself (``internal_errors_total`` above 0).
    """

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.preexec_fn = preexec_fn  # run in the child before it starts (e.g. lower a limit)
        self.port = free_port()
        self.args = ["--port", str(self.port), *args]
        self.env = dict(os.environ, **(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the process)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """Everything the gateway wrote so far."""
        self._output.seek(0)
        return self._output.read().decode(errors="replace")

    def start(self, timeout: float = 15) -> GatewayProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tiergate_gateway", *self.args],
            env=self.env,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            preexec_fn=self.preexec_fn,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.output()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp,
            ):
                if resp.status == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError("gateway did not become ready")

    def stop(self) -> str:
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            internal = internal_errors(self.url)
            self.proc.terminate()
        else:
            internal = 0
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        output = self.output()
        assert internal == 0, f"the gateway broke {internal} answers itself:\n{output[-4000:]}"
        return output


def internal_errors(url: str) -> float:
    """The gateway's ``tiergate_gateway_internal_errors_total`` (0 if it cannot be scraped)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tiergate_gateway_internal_errors_total")
    )


def envelope_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])
