"""The operator's readiness probe: the state machine, kopf's peering rule, the server, settings."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from kubernetes.client import Configuration

from tiergate_operator.readiness import (
    TIERGATE_CRDS,
    Readiness,
    ReadinessServer,
    higher_priority_peer_alive,
    is_established,
    serve_readiness,
)
from tiergate_operator.settings import ReadinessEndpoint, SettingsError, readiness_endpoint

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ESTABLISHED = {"status": {"conditions": [{"type": "Established", "status": "True"}]}}


@pytest.fixture
async def running_loop() -> AsyncIterator[asyncio.Task[None]]:
    async def reconcile_forever() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(reconcile_forever())
    yield task
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_crds_are_the_tiergate_kinds() -> None:
    assert {
        "modelroutes.tiergate.dev",
        "apikeytiers.tiergate.dev",
        "spendreports.tiergate.dev",
    } == TIERGATE_CRDS


def test_established_is_read_from_the_crd_conditions() -> None:
    assert is_established(ESTABLISHED)
    assert not is_established(
        {"status": {"conditions": [{"type": "Established", "status": "False"}]}}
    )
    assert not is_established({})


async def test_not_ready_before_the_reconciler_loop_runs() -> None:
    readiness = Readiness()
    for crd in TIERGATE_CRDS:
        readiness.crd_observed(crd, established=True)
    verdict = readiness.verdict()
    assert not verdict.ready
    assert verdict.waiting_for == ("the reconciler loop to run",)


async def test_ready_once_kopf_has_listed_and_both_crds_are_established(
    running_loop: asyncio.Task[None],
) -> None:
    readiness = Readiness(loop=running_loop)
    verdict = readiness.verdict()
    assert not verdict.ready
    assert verdict.body()["ready"] is False
    assert any("initial listing" in reason for reason in verdict.waiting_for)
    assert any("modelroutes.tiergate.dev" in reason for reason in verdict.waiting_for)

    readiness.crd_observed("modelroutes.tiergate.dev", established=True)
    readiness.crd_observed("unrelated.example.com", established=True)
    readiness.crd_observed("spendreports.tiergate.dev", established=True)
    readiness.crd_observed("apikeytiers.tiergate.dev", established=False)
    assert not readiness.verdict().ready  # apikeytiers is not served yet
    assert [r for r in readiness.verdict().waiting_for if "CustomResourceDefinition" in r] == [
        "CustomResourceDefinition apikeytiers.tiergate.dev to be Established"
    ]

    readiness.crd_observed("apikeytiers.tiergate.dev", established=True)
    verdict = readiness.verdict()
    assert verdict.ready
    assert verdict.body() == {"ready": True}


async def test_once_ready_it_does_not_flap(running_loop: asyncio.Task[None]) -> None:
    readiness = Readiness(loop=running_loop)
    for crd in TIERGATE_CRDS:
        readiness.crd_observed(crd, established=True)
    assert readiness.verdict().ready
    # A CRD deleted, a peering check failing: still ready while the loop runs.
    readiness.crd_observed("modelroutes.tiergate.dev", established=False)
    readiness.standby_observed(False, "Unreachable: no answer")
    assert readiness.verdict().ready


async def test_a_stopped_loop_is_not_ready_even_after_readiness() -> None:
    loop = asyncio.create_task(asyncio.sleep(0))
    readiness = Readiness(loop=loop)
    for crd in TIERGATE_CRDS:
        readiness.crd_observed(crd, established=True)
    assert readiness.verdict().ready
    await loop
    assert not readiness.verdict().ready


async def test_a_standby_replica_is_ready_while_its_loop_runs(
    running_loop: asyncio.Task[None],
) -> None:
    readiness = Readiness(loop=running_loop)
    readiness.standby_observed(False, "Forbidden: clusterkopfpeerings")
    verdict = readiness.verdict()
    assert not verdict.ready
    assert "the peering check: Forbidden: clusterkopfpeerings" in verdict.waiting_for
    readiness.standby_observed(True)
    assert readiness.verdict().ready
    readiness.standby_observed(False)  # it took over and now lists: no flapping
    assert readiness.verdict().ready


def peer(priority: int, seen: datetime, lifetime: int = 60) -> dict[str, Any]:
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


@pytest.mark.parametrize(
    ("peers", "standby"),
    [
        ({}, False),
        ({"me": peer(10, NOW)}, False),
        ({"me": peer(10, NOW), "low": peer(5, NOW)}, False),
        ({"me": peer(10, NOW), "high": peer(20, NOW - timedelta(seconds=30))}, True),
        ({"me": peer(10, NOW), "dead": peer(20, NOW - timedelta(seconds=61))}, False),
        ({"me": peer(10, NOW), "naive": {"priority": 20, "lastseen": "2026-01-01T11:59:50"}}, True),
        ({"me": peer(10, NOW), "broken": {"priority": 20, "lastseen": "yesterday"}}, False),
        ({"me": peer(10, NOW), "junk": {"priority": "high", "lastseen": NOW.isoformat()}}, False),
        ({"me": peer(10, NOW), "zulu": {"priority": 20, "lastseen": "2026-01-01T11:59:50Z"}}, True),
    ],
)
def test_kopf_peering_rule(peers: dict[str, Any], standby: bool) -> None:
    assert higher_priority_peer_alive({"status": peers}, 10, NOW) is standby


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        ("http://0.0.0.0:8081/readyz", ReadinessEndpoint("0.0.0.0", 8081, "/readyz")),
        ("http://127.0.0.1:9000", ReadinessEndpoint("127.0.0.1", 9000, "/")),
    ],
)
def test_readiness_endpoint_setting(value: str, expected: ReadinessEndpoint | None) -> None:
    assert readiness_endpoint({"TIERGATE_READINESS": value}) == expected
    assert readiness_endpoint({}) is None


@pytest.mark.parametrize(
    "value",
    [
        "https://0.0.0.0:8081/readyz",
        "0.0.0.0:8081",
        "http://0.0.0.0/readyz",
        "http://0.0.0.0:0/readyz",
        "http://0.0.0.0:99999/readyz",
        "http://0.0.0.0:port/readyz",
        "http://user:pw@0.0.0.0:8081/readyz",
        "http://0.0.0.0:8081/readyz?x=1",
    ],
)
def test_a_bad_readiness_endpoint_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match=r"TIERGATE_READINESS=.* is not http://<host>:<port>"):
        readiness_endpoint({"TIERGATE_READINESS": value})


async def get(port: int, path: str = "/readyz") -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        if response.content_type != "application/json":
            return response.status, await response.text()
        return response.status, await response.json()


async def test_the_server_answers_503_then_200_and_frees_its_port(
    running_loop: asyncio.Task[None],
) -> None:
    port = free_port()
    readiness = Readiness(loop=running_loop)
    server = ReadinessServer(ReadinessEndpoint("127.0.0.1", port, "/readyz"), readiness)
    await server.start()
    try:
        status, body = await get(port)
        assert status == 503
        assert body["ready"] is False
        assert body["waiting_for"]
        assert (await get(port, "/other"))[0] == 404
        for crd in TIERGATE_CRDS:
            readiness.crd_observed(crd, established=True)
        assert await get(port) == (200, {"ready": True})
    finally:
        await server.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(port)
    with socket.socket() as sock:  # as a restarted operator would (connections in TIME_WAIT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()  # the port is free again


async def test_the_server_asks_peering_until_ready(running_loop: asyncio.Task[None]) -> None:
    answers: list[bool | Exception] = [RuntimeError("API down"), False, True]
    asked = 0

    async def standby() -> bool:
        nonlocal asked
        answer = answers[asked]
        asked += 1
        if isinstance(answer, Exception):
            raise answer
        return answer

    port = free_port()
    readiness = Readiness(loop=running_loop)
    server = ReadinessServer(ReadinessEndpoint("127.0.0.1", port, "/readyz"), readiness, standby)
    await server.start()
    try:
        status, body = await get(port)
        assert status == 503
        assert "the peering check: RuntimeError: API down" in body["waiting_for"]
        assert (await get(port))[0] == 503  # active, still listing
        assert await get(port) == (200, {"ready": True})  # standing by
        assert await get(port) == (200, {"ready": True})
        assert asked == 3  # never asked again once ready
    finally:
        await server.stop()


async def test_a_busy_port_refuses_to_start(running_loop: asyncio.Task[None]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = int(sock.getsockname()[1])
        endpoint = ReadinessEndpoint("127.0.0.1", port, "/readyz")
        with pytest.raises(SettingsError, match=f"cannot listen on 127.0.0.1:{port}"):
            await serve_readiness(Readiness(loop=running_loop), endpoint, Configuration(), None, 0)


async def test_no_endpoint_no_server() -> None:
    assert await serve_readiness(Readiness(), None, Configuration(), None, 0) is None
