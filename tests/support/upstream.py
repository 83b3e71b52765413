"""A real OpenAI-protocol HTTP server on 127.0.0.1 that fails on purpose, and records what it got.

Its answers are built by the CLI's mock upstream (``tiergate_cli.mock_upstream``), so both
speak OpenAI's protocol the same way; this one adds the faults tests need.

Each ``MockUpstream`` runs an aiohttp server in its own thread and event loop,
so sync and async clients alike can call through the gateway to it.
``behaviour`` picks what it does with the next requests:

- ``ok``: a normal answer (chat, completions, embeddings; streamed if asked)
- ``status``: answer ``status`` with an OpenAI error body
- ``slow``: wait ``delay`` seconds before answering normally
- ``reset_mid_stream``: send the head and one chunk, then reset the connection
- ``hang_stream``: send one chunk, then wait until the caller goes away
  (sets ``disconnected``)
- ``slow_stream``: send a chunk every ``delay`` seconds, ``chunks`` times
- ``one_piece_stream``: the events of ``ok``'s stream in one body with a length (the whole
  stream arrives with its head, as from a fast or caching upstream)
- ``stall_body``: send a 200 head and half of the body, then nothing (until the caller leaves)
- ``late_first_event``: send the head at once, then SSE comments only; the first data
  event ``delay`` seconds later (a plain answer: the whole body after ``delay``)
- ``invalid_200``: answer 200 with a body that is not JSON (a stream: a first event that
  is not JSON)
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tiergate_cli.mock_upstream import (
    SSE_DONE,
    answer,
    error_body,
    sse_chunk,
    sse_event,
    usage_of,
    wants_usage,
)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class MockUpstream:
    name: str
    behaviour: str = "ok"
    status: int = 500
    delay: float = 0.0
    chunks: int = 3
    prompt_tokens: int = 10
    completion_tokens: int = 5
    headers: dict[str, str] = field(default_factory=dict)  # sent with every answer
    received: list[Received] = field(default_factory=list)
    received_event: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    tls: ssl.SSLContext | None = None  # set before start: serves https
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    def reset(self, behaviour: str = "ok", **changes: Any) -> None:
        self.behaviour = behaviour
        for key, value in changes.items():
            setattr(self, key, value)
        self.received.clear()
        self.received_event.clear()
        self.disconnected.clear()

    # -- server ------------------------------------------------------------
    def start(self) -> MockUpstream:
        ready = threading.Event()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_post("/v1/{endpoint:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            loop.run_until_complete(self._runner.setup())
            site = web.SockSite(self._runner, sock, ssl_context=self.tls)
            loop.run_until_complete(site.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"upstream-{self.name}", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body))
        self.received_event.set()
        endpoint = request.match_info["endpoint"]
        behaviour = self.behaviour
        if behaviour == "status":
            message = f"{self.name} says {self.status}"
            return web.json_response(
                error_body(message, "upstream_test"), status=self.status, headers=self.headers
            )
        if behaviour == "slow":
            await asyncio.sleep(self.delay)
        if behaviour == "invalid_200" and not body.get("stream"):
            return web.Response(status=200, body=b"<html>upstream proxy error</html>")
        if behaviour in ("stall_body", "late_first_event") and not body.get("stream"):
            return await self._stall(request, body, behaviour)
        if body.get("stream"):
            return await self._stream(request, body, behaviour)
        usage = usage_of(self.prompt_tokens, self.completion_tokens)
        model = str(body.get("model"))
        return web.json_response(
            answer(endpoint, model, f"hello from {self.name}", usage), headers=self.headers
        )

    async def _stall(
        self, request: web.Request, body: dict[str, Any], behaviour: str
    ) -> web.StreamResponse:
        """A plain answer whose body stalls (for ever, or ``delay`` seconds) halfway."""
        endpoint = request.match_info["endpoint"]
        usage = usage_of(self.prompt_tokens, self.completion_tokens)
        data = json.dumps(
            answer(endpoint, str(body.get("model")), f"hello from {self.name}", usage)
        )
        whole = data.encode()
        response = web.StreamResponse(
            headers={"content-type": "application/json", "content-length": str(len(whole))}
        )
        await response.prepare(request)
        await response.write(whole[: len(whole) // 2])
        if behaviour == "stall_body":
            await self._until_gone()
        await asyncio.sleep(self.delay)
        await response.write(whole[len(whole) // 2 :])
        await response.write_eof()
        return response

    async def _until_gone(self) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            self.disconnected.set()

    async def _stream(
        self, request: web.Request, body: dict[str, Any], behaviour: str
    ) -> web.StreamResponse:
        model = str(body.get("model"))
        if behaviour == "one_piece_stream":
            events = [sse_chunk(model, f"{self.name}:")]
            events += [sse_chunk(model, f" part{index}") for index in range(self.chunks)]
            if wants_usage(body):
                usage = usage_of(self.prompt_tokens, self.completion_tokens)
                events.append(sse_event(model, [], usage=usage))
            return web.Response(
                body=b"".join(events) + SSE_DONE,
                content_type="text/event-stream",
                headers=self.headers,
            )
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        if behaviour == "invalid_200":
            await response.write(b"data: <html>upstream proxy error</html>\n\n")
            await response.write_eof()
            return response
        if behaviour == "late_first_event":
            deadline = asyncio.get_running_loop().time() + self.delay
            while asyncio.get_running_loop().time() < deadline:
                await response.write(b": still thinking\n\n")
                await asyncio.sleep(0.1)
        if behaviour == "stall_body":
            await response.write(b": a comment, then nothing\n\n")
            await self._until_gone()
        await response.write(sse_chunk(model, f"{self.name}:"))
        if behaviour == "reset_mid_stream":
            assert request.transport is not None
            request.transport.abort()
            return response
        if behaviour == "hang_stream":
            try:
                while True:
                    await response.write(b": keep-alive\n\n")
                    await asyncio.sleep(0.05)
            except (ConnectionResetError, asyncio.CancelledError):
                self.disconnected.set()
                raise
        for index in range(self.chunks):
            if behaviour == "slow_stream":
                await asyncio.sleep(self.delay)
            await response.write(sse_chunk(model, f" part{index}"))
        if wants_usage(body):
            usage = usage_of(self.prompt_tokens, self.completion_tokens)
            await response.write(sse_event(model, [], usage=usage))
        await response.write(SSE_DONE)
        await response.write_eof()
        return response
