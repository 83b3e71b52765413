"""Mock OpenAI-protocol upstreams on 127.0.0.1, for ``dev up``, the demo and tests.

``python -m tiergate_cli.mock_upstream --listen primary=9901 --listen secondary=9902``
serves one named upstream per port: chat completions (streamed or not, with usage),
completions, embeddings and models. Admin endpoints drive failures on purpose:

- ``POST /admin/fail`` ``{"status": 503, "seconds": 10}`` (or ``"count": N``): answer errors
- ``POST /admin/recover``: answer normally again
- ``GET /admin/stats``: requests served and refused, and the upstream models asked for
- ``POST /admin/reset``: zero the counters
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = [
    "SSE_DONE",
    "MockUpstream",
    "RunningUpstreams",
    "answer",
    "error_body",
    "serve",
    "sse_chunk",
    "sse_event",
    "start_in_thread",
    "usage_of",
    "wants_usage",
]


@dataclass
class MockUpstream:
    name: str
    served: int = 0
    refused: int = 0
    models: Counter[str] = field(default_factory=Counter)
    fail_status: int = 0
    fail_until: float = 0.0
    fail_count: int = 0

    def failing(self) -> bool:
        if self.fail_count > 0:
            self.fail_count -= 1
            return True
        return bool(self.fail_status) and time.monotonic() < self.fail_until

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "served": self.served,
            "refused": self.refused,
            "models": dict(self.models),
        }

    # -- OpenAI protocol ------------------------------------------------------
    async def openai(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "body is not JSON", "invalid_request_error")
        model = str(body.get("model", ""))
        if self.failing():
            self.refused += 1
            return _error(
                self.fail_status or 503,
                f"{self.name} is failing on purpose (mock)",
                "server_error",
                headers={"retry-after": "1"},
            )
        self.served += 1
        self.models[model] += 1
        endpoint = request.match_info["endpoint"]
        usage = _usage(body)
        text = f"Hello from {self.name} ({model})"
        if body.get("stream") and endpoint != "embeddings":
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            for word in text.split(" "):
                await response.write(sse_chunk(model, word + " "))
            await response.write(
                sse_event(model, [{"index": 0, "delta": {}, "finish_reason": "stop"}])
            )
            if wants_usage(body):
                await response.write(sse_event(model, [], usage=usage))
            await response.write(SSE_DONE)
            await response.write_eof()
            return response
        return web.json_response(answer(endpoint, model, text, usage))

    async def list_models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": model, "object": "model", "created": 0, "owned_by": self.name}
                    for model in self.models
                ],
            }
        )

    # -- admin ----------------------------------------------------------------
    async def fail(self, request: web.Request) -> web.Response:
        order = await request.json() if request.can_read_body else {}
        self.fail_status = int(order.get("status", 503))
        self.fail_count = int(order.get("count", 0))
        self.fail_until = time.monotonic() + float(
            order.get("seconds", 0 if self.fail_count else 3600)
        )
        return web.json_response(self.stats())

    async def recover(self, request: web.Request) -> web.Response:
        self.fail_status, self.fail_count, self.fail_until = 0, 0, 0.0
        return web.json_response(self.stats())

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def reset(self, request: web.Request) -> web.Response:
        self.served, self.refused = 0, 0
        self.models.clear()
        return web.json_response(self.stats())

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/{endpoint:chat/completions|completions|embeddings}", self.openai)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_post("/admin/fail", self.fail)
        app.router.add_post("/admin/recover", self.recover)
        app.router.add_get("/admin/stats", self.get_stats)
        app.router.add_post("/admin/reset", self.reset)
        return app


# -- OpenAI's shapes, shared with the tests' fault-injecting upstream (tests/support) -------

SSE_DONE = b"data: [DONE]\n\n"


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def answer(endpoint: str, model: str, text: str, usage: dict[str, int]) -> dict[str, Any]:
    """A non-streamed answer of ``endpoint`` (``chat/completions``, ``completions``, ``embeddings``)."""
    if endpoint == "embeddings":
        return {
            "object": "list",
            "model": model,
            "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 1.0]}],
            "usage": {
                "prompt_tokens": usage["prompt_tokens"],
                "total_tokens": usage["prompt_tokens"],
            },
        }
    if endpoint == "completions":
        return {
            "id": "cmpl-mock",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
            "usage": usage,
        }
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }


def sse_event(model: str, choices: list[Any], **extra: Any) -> bytes:
    """One ``data:`` event of a streamed chat completion."""
    chunk = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        **extra,
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def sse_chunk(model: str, text: str) -> bytes:
    return sse_event(model, [{"index": 0, "delta": {"content": text}, "finish_reason": None}])


def wants_usage(body: dict[str, Any]) -> bool:
    return bool((body.get("stream_options") or {}).get("include_usage"))


def error_body(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _usage(body: dict[str, Any]) -> dict[str, int]:
    prompt = max(1, len(json.dumps(body.get("messages") or body.get("prompt") or "")) // 4)
    return usage_of(prompt, 8)


def _error(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(error_body(message, kind), status=status, headers=headers)


async def serve(
    listen: dict[str, int], host: str = "127.0.0.1"
) -> tuple[list[web.AppRunner], dict[str, int]]:
    """Start one upstream per ``name: port`` (0 picks a free port); returns the runners and ports."""
    runners: list[web.AppRunner] = []
    ports: dict[str, int] = {}
    for name, port in listen.items():
        runner = web.AppRunner(MockUpstream(name).app(), access_log=None, handle_signals=False)
        await runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            sock.close()
            for started in [*runners, runner]:
                await started.cleanup()
            raise OSError(
                f"mock upstream {name}: cannot listen on {host}:{port}: {error.strerror}"
            ) from error
        await web.SockSite(runner, sock).start()
        runners.append(runner)
        ports[name] = int(sock.getsockname()[1])
    return runners, ports


@dataclass
class RunningUpstreams:
    ports: dict[str, int]
    _loop: asyncio.AbstractEventLoop
    _thread: threading.Thread

    def base_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}/v1"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def start_in_thread(listen: dict[str, int]) -> RunningUpstreams:
    """The upstreams on their own event loop in a daemon thread (for tests and the CLI)."""
    loop = asyncio.new_event_loop()
    started: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            started["runners"], started["ports"] = loop.run_until_complete(serve(listen))
        except OSError as error:
            started["error"] = error
            ready.set()
            return
        ready.set()
        loop.run_forever()
        for runner in started["runners"]:
            loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="mock-upstreams", daemon=True)
    thread.start()
    ready.wait(10)
    if "error" in started:
        raise started["error"]
    return RunningUpstreams(started["ports"], loop, thread)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tiergate_cli.mock_upstream",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--listen", action="append", required=True, metavar="NAME=PORT")
    args = parser.parse_args(argv)
    listen = {name: int(port) for name, _, port in (item.partition("=") for item in args.listen)}

    async def forever() -> None:
        _, ports = await serve(listen)
        print(json.dumps(ports), flush=True)
        await asyncio.Event().wait()

    asyncio.run(forever())


if __name__ == "__main__":
    main()
