"""A scripted Kubernetes API server on 127.0.0.1: lists and watches of one ConfigMap ``ns/gw``."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import orjson
from aiohttp import web

__all__ = ["FakeApi", "cm_object", "line", "recorder"]


def cm_object(version: int, data: str, padding: int = 0) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "gw", "namespace": "ns", "resourceVersion": str(version)}
    if padding:
        metadata["annotations"] = {"pad": "x" * padding}
    return {"kind": "ConfigMap", "metadata": metadata, "data": {"config.json": data}}


def line(kind: str, obj: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": kind, "object": obj}) + b"\n"


class FakeApi:
    """Lists and watches of one ConfigMap, each watch answered by the next scripted step.

    With ``tls`` it serves HTTPS (a context that may require client certificates).
    """

    def __init__(
        self,
        lists: list[dict[str, Any]],
        watches: list[list[Any]],
        tls: ssl.SSLContext | None = None,
    ):
        self.lists = lists
        self.watches = watches  # per watch: bytes to send, seconds to pause, None to hold open
        self.requests: list[dict[str, str]] = []
        self.url = ""
        self._tls = tls
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        self.requests.append(params)
        assert params["fieldSelector"] == "metadata.name=gw"
        if "watch" not in params:
            return web.json_response(self.lists.pop(0))
        assert params["allowWatchBookmarks"] == "true"
        steps = self.watches.pop(0) if self.watches else [None]
        if steps == [410]:
            return web.json_response({"kind": "Status", "code": 410, "message": "gone"}, status=410)
        resp = web.StreamResponse()
        await resp.prepare(request)
        for step in steps:
            if step is None:
                await self._closing.wait()
            elif isinstance(step, float):
                await asyncio.sleep(step)
            else:
                await resp.write(step)
        return resp

    async def __aenter__(self) -> FakeApi:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/ns/configmaps", self.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._tls)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if self._tls else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        self._closing.set()
        await self._runner.cleanup()


def recorder(last: bytes) -> tuple[list[bytes], Any, asyncio.Event]:
    """An ``offer`` callback recording what it is offered; the event is set once ``last`` is."""
    offered: list[bytes] = []
    seen_last = asyncio.Event()

    def offer(data: bytes, source: str) -> bool:
        offered.append(data)
        if data == last:
            seen_last.set()
        return True

    return offered, offer, seen_last
