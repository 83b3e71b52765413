"""CPU instructions per proxied request, counted by valgrind's callgrind: steady on a noisy machine.

Not a test: a script that prints a table. Runs on 127.0.0.1 only. Needs valgrind
(``apt-get install -y valgrind``).

    .venv/bin/python bench/gateway/instructions.py [--requests 2000] [--tree PATH ...]

Requests per second swing by 2x on a shared machine; instruction counts do not
(the same code, inputs and interpreter give the same count, whatever else runs).
Each system runs twice under callgrind, once with the warm-up only and once with
``--requests`` more; the difference divided by ``--requests`` is the cost of one
request in user-space instructions (the kernel's share is not counted). Systems:

- ``bare``: the gateway's own server and client as a plain pass-through (parse the
  JSON, forward, answer): the floor for this design
- ``tiergate``: the gateway with everything on, as in ``run.py``
- ``tiergate@PATH`` for each ``--tree PATH``: the same from another checkout
  (e.g. ``git worktree add /tmp/base main``), to compare two versions of the code
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httptools
import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from run import BODY, KEY, free_port, tiergate_config, wait_first_completion  # noqa: E402

WARM_UP = 200
CONNECTIONS = 10


def gateway_path(tree: Path) -> str:
    """PYTHONPATH for the gateway of a checkout (older ones kept the contract in the gateway)."""
    return os.pathsep.join(str(tree / folder) for folder in ("contract", "gateway_image"))


def bare_passthrough(upstream_port: int, port: int) -> None:
    """The floor: the gateway's server and client, JSON parsed and re-encoded, nothing else."""
    import uvloop

    from tiergate_gateway.client import Endpoint, UpstreamPool
    from tiergate_gateway.server import HttpServer, Request, Response, StreamResponse

    async def main() -> None:
        pool = UpstreamPool()
        endpoint = Endpoint.parse(f"http://127.0.0.1:{upstream_port}/v1")

        async def handle(request: Request) -> Response | StreamResponse:
            payload = orjson.loads(request.body)
            response = await pool.request(
                endpoint,
                "/chat/completions",
                b"content-type: application/json\r\n",
                orjson.dumps(payload),
                connect_timeout=5,
                first_byte_timeout=30,
                deadline=pool.loop.time() + 60,
            )
            if not payload.get("stream"):
                return Response(response.status, await response.read_all())
            first = await response.read()

            async def chunks():  # type: ignore[no-untyped-def]
                yield first
                while chunk := await response.read():
                    yield chunk

            return StreamResponse(200, chunks())

        server = HttpServer(handle, lambda status, message: b"", 1 << 20)
        await server.start("127.0.0.1", port)
        await asyncio.Event().wait()

    uvloop.run(main())


def send(port: int, count: int, stream: bool) -> None:
    """Exactly ``count`` requests over ``CONNECTIONS`` keep-alive connections; all must be 200."""
    body = json.dumps(dict(BODY, stream=True) if stream else BODY).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\nauthorization: Bearer %s\r\n"
        b"content-length: %d\r\n\r\n%s" % (KEY.encode(), len(body), body)
    )

    class Done:
        complete = False

        def on_message_complete(self) -> None:
            self.complete = True

    async def connection(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(n):
            writer.write(request)
            done = Done()
            parser = httptools.HttpResponseParser(done)
            while not done.complete:
                data = await reader.read(65536)
                if not data:
                    raise RuntimeError("the server closed the connection")
                parser.feed_data(data)
            if parser.get_status_code() != 200:
                raise RuntimeError(f"got HTTP {parser.get_status_code()}")
        writer.close()

    async def main() -> None:
        share, rest = divmod(count, CONNECTIONS)
        await asyncio.gather(*(connection(share + (i < rest)) for i in range(CONNECTIONS)))

    asyncio.run(main())


def instructions(command: list[str], env: dict[str, str], extra: int, stream: bool) -> int:
    """Total instructions of ``command`` serving the warm-up plus ``extra`` requests."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command, str(port)],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wait_first_completion(url, time.monotonic(), process, limit=300)
        send(port, WARM_UP, stream)
        if extra:
            send(port, extra, stream)
        process.terminate()
        process.wait(120)
        found = re.search(r"^(?:totals|summary): (\d+)", out.read_text(), flags=re.M)
        if found is None:
            raise RuntimeError(f"no callgrind totals from {command}")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--tree", type=Path, action="append", default=[])
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="also run tiergate with this environment variable, e.g. "
        "TIERGATE_GATEWAY_ACCESS_LOG_SAMPLE=0 (the access log off)",
    )
    parser.add_argument("--skip-bare", action="store_true", help="leave out the bare floor")
    parser.add_argument("--serve-bare", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:  # UPSTREAM_PORT PORT: how this script starts the bare system
        bare_passthrough(*args.serve_bare)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is required (apt-get install -y valgrind)")
    python = sys.executable
    folder = Path(tempfile.mkdtemp(prefix="tiergate-instructions-"))
    upstream_port = free_port()
    upstream = subprocess.Popen([python, str(HERE / "mock_upstream.py"), str(upstream_port)])
    try:
        config = folder / "tiergate.json"
        tiergate_config(config, upstream_port)
        gateway = [python, "-m", "tiergate_gateway", "--config-file", str(config)]
        gateway += ["--log-level", "WARNING", "--port"]
        here = {"PYTHONPATH": gateway_path(ROOT)}
        systems: list[tuple[str, list[str], dict[str, str]]] = [
            (
                "bare",
                [python, str(Path(__file__).resolve()), "--serve-bare", str(upstream_port)],
                here,
            ),
            ("tiergate", gateway, here),
        ]
        if args.skip_bare:
            systems.pop(0)
        systems += [
            (f"tiergate {variant}", gateway, {**here, **dict([variant.split("=", 1)])})
            for variant in args.variant
        ]
        systems += [
            (f"tiergate@{tree}", gateway, {"PYTHONPATH": gateway_path(tree.resolve())})
            for tree in args.tree
        ]
        print("| system | plain (instructions/request) | stream (instructions/request) |")
        print("|---|---:|---:|")
        for name, command, env in systems:
            cells = []
            for stream in (False, True):
                base = instructions(command, env, 0, stream)
                total = instructions(command, env, args.requests, stream)
                cells.append(f"{(total - base) / args.requests:,.0f}")
            print(f"| {name} | {cells[0]} | {cells[1]} |", flush=True)
        print()
        print(
            f"callgrind, {args.requests} requests after {WARM_UP} warm-up ones over "
            f"{CONNECTIONS} connections; user-space instructions of the server process only"
        )
    finally:
        upstream.terminate()
        upstream.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
