"""Benchmark: limits and budgets through Redis, this tree beside a base commit, side by side.

Not a test: a script that prints a table. Runs on 127.0.0.1 only.

    .venv/bin/python bench/gateway/redis_round_trips.py [--base main] [--rounds 3]
        [--duration 5] [--connections 50] [--burst 500]

For each tree (the base commit, extracted with ``git archive`` into a temporary folder, and
this checkout) it starts a redis-server of its own, the benchmark mock upstream and one
gateway process (the same Python and dependencies; only the gateway and contract sources
differ), with everything on: request, token and concurrency limits and a monthly budget, and
for this tree prepaid credits too (``--no-credits`` leaves them out).

- Redis round trips per call: the gateway talks to Redis through a counting TCP proxy (RESP
  commands the client sent; commands run inside a Lua script are not round trips), over
  ``--count`` sequential calls after a warm-up.
- req/s and median latency (plain chat completions, ``--connections`` keep-alive clients,
  ``--duration`` s per run, interleaved rounds, medians) with the gateway connected straight
  to Redis, and without Redis (in-process limits) for the added latency.
- A burst: ``--burst`` clients connect at once and send one call each: how many got 503
  (``limits_unavailable``), and what the tier still held in Redis once every answer was in
  (concurrency slots: the base's counter, this tree's leases).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE)]

from run import BODY, KEY, free_port, tiergate_config, wait_first_completion  # noqa: E402

REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
    b"authorization: Bearer " + KEY.encode() + b"\r\ncontent-length: %d\r\n\r\n%s"
)


def _request() -> bytes:
    import json

    body = json.dumps(BODY).encode()
    return REQUEST % (len(body), body)


# -- a RESP-counting proxy (run as a subprocess: --count-proxy LISTEN TARGET CONTROL) ---------


def _commands(buffer: bytearray) -> int:
    """Remove and count the complete RESP commands (arrays of bulk strings) at the front."""
    count, pos = 0, 0
    while True:
        start = pos
        if len(buffer) <= pos or buffer[pos : pos + 1] != b"*":
            break
        end = buffer.find(b"\r\n", pos)
        if end < 0:
            break
        items, pos, complete = int(buffer[pos + 1 : end]), end + 2, True
        for _ in range(items):
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                complete = False
                break
            size = int(buffer[pos + 1 : end])
            pos = end + 2 + size + 2
            if pos > len(buffer):
                complete = False
                break
        if not complete:
            pos = start
            break
        count += 1
    del buffer[:pos]
    return count


async def _proxy(listen: int, target: int, control: int) -> None:
    counted = [0]

    async def pipe_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = bytearray()
        while data := await reader.read(65536):
            pending += data
            counted[0] += _commands(pending)
            writer.write(data)
        writer.close()

    async def pipe_down(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        with contextlib.suppress(OSError):
            await asyncio.gather(pipe_up(reader, up_writer), pipe_down(up_reader, writer))

    async def report(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(str(counted[0]).encode())
        writer.close()

    await asyncio.start_server(client, "127.0.0.1", listen)
    await asyncio.start_server(report, "127.0.0.1", control)
    await asyncio.Event().wait()


def _proxy_count(control: int) -> int:
    with socket.create_connection(("127.0.0.1", control)) as sock:
        return int(sock.recv(64) or b"0")


# -- load ---------------------------------------------------------------------------------------


async def _read_answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _load(port: int, connections: int, duration: float) -> tuple[float, float, int]:
    """(req/s, median latency ms, non-200 answers) of keep-alive clients for ``duration`` s."""
    request = _request()
    latencies: list[float] = []
    failures = [0]
    stop_at = time.monotonic() + duration

    async def one_client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < stop_at:
            sent = time.perf_counter()
            writer.write(request)
            if await _read_answer(reader) != 200:
                failures[0] += 1
            latencies.append(time.perf_counter() - sent)
        writer.close()

    started = time.monotonic()
    await asyncio.gather(*(one_client() for _ in range(connections)))
    elapsed = time.monotonic() - started
    return len(latencies) / elapsed, statistics.median(latencies) * 1000, failures[0]


async def _burst(port: int, clients: int) -> dict[int, int]:
    """``clients`` new connections at once, one call each: answers by status."""
    request = _request()
    gate = asyncio.Event()

    async def one() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await gate.wait()
        writer.write(request)
        status = await _read_answer(reader)
        writer.close()
        return status

    tasks = [asyncio.create_task(one()) for _ in range(clients)]
    await asyncio.sleep(0.5)
    gate.set()
    statuses = await asyncio.gather(*tasks)
    return {status: statuses.count(status) for status in sorted(set(statuses))}


async def _sequential(port: int, count: int) -> None:
    request = _request()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        writer.write(request)
        await _read_answer(reader)
    writer.close()


# -- processes ----------------------------------------------------------------------------------


@dataclass
class Tree:
    name: str
    root: Path


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is required (apt-get install -y redis-server)")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return proc
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.02)


def _redis(port: int, *command: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-p", str(port), *command], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _start_gateway(
    tree: Tree, config: Path, redis_port: int | None
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            str(tree.root / package) for package in ("gateway_image", "contract")
        ),
    )
    command = [
        sys.executable, "-m", "tiergate_gateway", "--port", str(port),
        "--config-file", str(config), "--credentials-dir", str(config.parent),
    ]  # fmt: skip
    if redis_port is not None:
        command += ["--redis-url", f"redis://127.0.0.1:{redis_port}/0"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_first_completion(f"http://127.0.0.1:{port}/v1/chat/completions", time.monotonic(), proc)
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _extract(commit: str, folder: Path) -> Path:
    folder.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "gateway_image", "contract"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def _round_trips(tree: Tree, config: Path, calls: int) -> float:
    redis_port, listen, control = free_port(), free_port(), free_port()
    redis = _start_redis(redis_port)
    proxy = subprocess.Popen(
        [sys.executable, __file__, "--count-proxy", str(listen), str(redis_port), str(control)]
    )
    try:
        time.sleep(0.5)
        gateway, port = _start_gateway(tree, config, listen)
        try:
            asyncio.run(_sequential(port, 50))  # warm-up: connections made, scripts loaded
            before = _proxy_count(control)
            asyncio.run(_sequential(port, calls))
            return (_proxy_count(control) - before) / calls
        finally:
            _stop(gateway)
    finally:
        _stop(proxy)
        _stop(redis)


def _held(redis_port: int) -> str:
    """What the bench tier holds once every call is answered (slots; reserved nano-USD)."""
    legacy = _redis(redis_port, "GET", "tiergate:limits:{bench}:inflight")
    leases = _redis(redis_port, "ZCARD", "tiergate:limits:{bench}:leases")
    reserved = _redis(redis_port, "GET", "tiergate:limits:{bench}:reserved")
    slots = legacy if legacy else leases
    return (
        f"{slots or 0} slots, {reserved or 0} nUSD reserved" if reserved else f"{slots or 0} slots"
    )


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--count-proxy":
        asyncio.run(_proxy(*(int(arg) for arg in sys.argv[2:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="main", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--count", type=int, default=500, help="calls for the round-trip count")
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--no-credits", action="store_true", help="this tree without credits")
    args = parser.parse_args()
    base_commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.base],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tiergate-bench-redis-") as tmp:
        folder = Path(tmp)
        trees = [
            Tree(f"base {base_commit}", _extract(args.base, folder / "base")),
            Tree(f"this tree ({head}+)", ROOT),
        ]
        mock_port = free_port()
        mock = subprocess.Popen([sys.executable, str(HERE / "mock_upstream.py"), str(mock_port)])
        configs = {trees[0].name: folder / "base.json", trees[1].name: folder / "head.json"}
        tiergate_config(configs[trees[0].name], mock_port)
        credits = None if args.no_credits else Decimal("3000000")
        tiergate_config(configs[trees[1].name], mock_port, credits_usd=credits)
        try:
            time.sleep(0.5)
            trips = {
                tree.name: _round_trips(tree, configs[tree.name], args.count) for tree in trees
            }
            runs: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
            bursts: dict[str, tuple[dict[int, int], str]] = {}
            for round_ in range(args.rounds):
                # Alternate the order: on a busy machine, going first or second matters.
                for tree in trees if round_ % 2 == 0 else trees[::-1]:
                    for mode in ("no Redis", "Redis"):
                        redis_port = free_port() if mode == "Redis" else None
                        redis = _start_redis(redis_port) if redis_port is not None else None
                        gateway, port = _start_gateway(tree, configs[tree.name], redis_port)
                        try:
                            asyncio.run(_sequential(port, 100))
                            result = asyncio.run(_load(port, args.connections, args.duration))
                            runs.setdefault((tree.name, mode), []).append(result)
                            if redis_port is not None and tree.name not in bursts:
                                statuses = asyncio.run(_burst(port, args.burst))
                                time.sleep(0.5)
                                bursts[tree.name] = (statuses, _held(redis_port))
                        finally:
                            _stop(gateway)
                            if redis is not None:
                                _stop(redis)
        finally:
            _stop(mock)
    print(
        f"\nplain chat completions, {args.connections} keep-alive connections, "
        f"{args.duration:g}s per run, medians of {args.rounds} interleaved rounds; "
        f"requests, tokens and concurrency limits and a budget on"
        f"{'' if args.no_credits else ' (and credits, this tree)'}\n"
    )
    print(
        "| tree | Redis round trips per call | req/s no Redis | req/s Redis "
        "| p50 ms no Redis | p50 ms Redis | added p50 ms | non-200 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for tree in trees:
        local, shared = runs[(tree.name, "no Redis")], runs[(tree.name, "Redis")]
        rps_local = statistics.median(r[0] for r in local)
        rps_redis = statistics.median(r[0] for r in shared)
        p50_local = statistics.median(r[1] for r in local)
        p50_redis = statistics.median(r[1] for r in shared)
        failures = sum(r[2] for r in local + shared)
        print(
            f"| {tree.name} | {trips[tree.name]:.2f} | {rps_local:,.0f} | {rps_redis:,.0f} "
            f"| {p50_local:.2f} | {p50_redis:.2f} | {p50_redis - p50_local:+.2f} | {failures} |"
        )
    print(f"\nburst: {args.burst} clients at once, one call each, default Redis pool\n")
    print("| tree | answers by status | held once all were answered |")
    print("|---|---|---|")
    for tree in trees:
        statuses, held = bursts[tree.name]
        shown = ", ".join(f"{count} x {status}" for status, count in statuses.items())
        print(f"| {tree.name} | {shown} | {held} |")


if __name__ == "__main__":
    main()
