"""The SpendReport writer against a scripted API server on 127.0.0.1 (the real control plane
runs in ``test_ledger.py``): writes only with news or as a heartbeat, resumes after someone
else's write (409) without a new report, replaces a gone report, writes ``final`` at stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tiergate_gateway.report_writer import SpendReporter, report_name
from tiergate_gateway.sources import KubeAccess
from tiergate_gateway.spend import SpendRecorder

PATH = "/apis/tiergate.dev/v1alpha1/namespaces/ns/spendreports"


class ReportStore:
    """Objects by name with resourceVersion checks, as the API server keeps them."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.writes: list[tuple[str, dict[str, Any]]] = []

    def _stamp(self, obj: dict[str, Any]) -> web.Response:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.objects[obj["metadata"]["name"]] = obj
        return web.json_response(obj)

    async def create(self, request: web.Request) -> web.Response:
        obj = await request.json()
        if obj["metadata"]["name"] in self.objects:
            return web.json_response({"reason": "AlreadyExists"}, status=409)
        self.writes.append(("POST", obj))
        return self._stamp(obj)

    async def replace(self, request: web.Request) -> web.Response:
        obj = await request.json()
        have = self.objects.get(request.match_info["name"])
        if have is None:
            return web.json_response({"reason": "NotFound"}, status=404)
        if have["metadata"]["resourceVersion"] != obj["metadata"].get("resourceVersion"):
            return web.json_response({"reason": "Conflict"}, status=409)
        self.writes.append(("PUT", obj))
        return self._stamp(obj)

    async def read(self, request: web.Request) -> web.Response:
        have = self.objects.get(request.match_info["name"])
        if have is None:
            return web.json_response({"reason": "NotFound"}, status=404)
        return web.json_response(have)


@pytest.fixture
async def api() -> AsyncIterator[tuple[ReportStore, str]]:
    store = ReportStore()
    app = web.Application()
    app.router.add_post(PATH, store.create)
    app.router.add_put(PATH + "/{name}", store.replace)
    app.router.add_get(PATH + "/{name}", store.read)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield store, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def reporter(url: str, recorder: SpendRecorder, **options: Any) -> SpendReporter:
    return SpendReporter(
        "ns", "Pod_One", lambda: "gw", recorder, lambda: KubeAccess(url, {}, False), **options
    )


async def test_writes_with_news_and_as_a_heartbeat_only(api) -> None:
    store, url = api
    recorder = SpendRecorder()
    writer = reporter(url, recorder, interval=0.02, heartbeat=0.5)
    await writer.start()
    assert [method for method, _ in store.writes] == ["POST"]
    await asyncio.sleep(0.2)
    assert len(store.writes) == 1  # nothing new, heartbeat not due
    recorder.settle("t", "2026-12", "k/a", 0, 42, served=True)
    await asyncio.sleep(0.1)
    assert len(store.writes) == 2
    await asyncio.sleep(0.6)
    assert len(store.writes) == 3  # the heartbeat
    await writer.stop()
    method, final = store.writes[-1]
    assert method == "PUT" and final["spec"]["final"] is True
    assert final["spec"]["tiers"][0]["months"][0]["spentNano"] == 42
    assert final["metadata"]["name"].startswith("pod-one-")


async def test_someone_else_s_write_is_resumed_and_a_gone_report_replaced(api) -> None:
    store, url = api
    recorder = SpendRecorder()
    writer = reporter(url, recorder, interval=60)
    await writer.start()
    first = writer.name
    assert first is not None
    store.objects[first]["metadata"]["resourceVersion"] = "999"  # a label edited meanwhile
    recorder.settle("t", "2026-12", "k/a", 0, 5, served=True)
    await writer.write()
    assert writer.name == first and writer.reports_started == 0
    assert store.objects[first]["spec"]["tiers"][0]["months"][0]["spentNano"] == 5
    del store.objects[first]  # folded and released: gone
    recorder.settle("t", "2026-12", "k/a", 0, 7, served=True)
    await writer.write()
    assert writer.name != first and writer.reports_started == 1
    # The new report holds only what came after the last write of the old one.
    assert store.objects[writer.name]["spec"]["tiers"][0]["months"][0]["spentNano"] == 7
    await writer.stop()


def test_report_names_are_valid_and_new_each_time() -> None:
    names = {report_name("Gateway_Pod.7") for _ in range(20)}
    assert len(names) == 20
    assert all(
        n.startswith("gateway-pod.7-") and len(n) == len("gateway-pod.7-") + 8 for n in names
    )
    assert len(report_name("x" * 400)) == 244 + 9
