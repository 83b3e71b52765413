"""User-space instructions per relayed stream chunk, counted by callgrind: steady on a noisy machine.

Not a test: a script that prints a table. Runs on 127.0.0.1 only; needs valgrind.

    .venv/bin/python bench/streams/chunk_instructions.py [--streams 10] [--tree PATH ...]

For each tree (this one, and each ``--tree``, e.g. ``git worktree add /tmp/base <commit>``)
the gateway runs twice under callgrind behind a streambench mock that sends a content event
every ``--interval-ms``: once with ``--streams`` streams of ``FEW`` chunks, once with as many
streams of ``MANY`` chunks. The difference divided by the extra chunks is what one relayed
chunk costs the gateway in user space (reading it from the upstream, checking it, writing it
to the client; the kernel's share is not counted). The interval is long enough that each
chunk arrives on its own, even under callgrind's slowdown (the client checks that every
content event came through).

More chunks also take longer, and the gateway's timers (the upstream pool's ticker, the
server's sweeper, the spend report) run in that time: the same is measured at twice the
interval, and the line through both figures, taken to an interval of 0, is the cost of the
chunk alone (both are printed too).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httptools
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
from run import Scenario, tiergate_config

FEW, MANY = 10, 110


def gateway_path(tree: Path) -> str:
    return f"{tree / 'contract'}:{tree / 'gateway_image'}"


async def _one_stream(port: int, chunks: int) -> None:
    body = orjson.dumps(
        {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\nauthorization: Bearer %s\r\n"
        b"content-length: %d\r\n\r\n%s" % (harness.KEY.encode(), len(body), body)
    )

    class Body:
        def __init__(self) -> None:
            self.data = bytearray()
            self.complete = False

        def on_body(self, piece: bytes) -> None:
            self.data += piece

        def on_message_complete(self) -> None:
            self.complete = True

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = Body()
    parser = httptools.HttpResponseParser(received)
    writer.write(request)
    while not received.complete:
        data = await reader.read(65536)
        if not data:
            raise RuntimeError("the gateway closed the connection mid-stream")
        parser.feed_data(data)
    writer.close()
    if parser.get_status_code() != 200:
        raise RuntimeError(f"got HTTP {parser.get_status_code()}")
    content = received.data.count(b'"content"')
    if content < chunks:
        raise RuntimeError(f"{content} content events of {chunks} came through")


def _streams(port: int, streams: int, chunks: int) -> None:
    async def main() -> None:
        await asyncio.gather(*(_one_stream(port, chunks) for _ in range(streams)))

    asyncio.run(main())


def instructions(tree: Path, streams: int, chunks: int, interval_ms: float, folder: Path) -> int:
    """The gateway's total instructions over a warm-up and ``streams`` streams of ``chunks``."""
    mock = harness.start_mock(harness.build_streambench(), chunks=chunks, interval_ms=interval_ms)
    try:
        config = folder / "config.json"
        scenario = Scenario(streams, interval_ms, chunks * interval_ms / 1000, 1)
        tiergate_config(config, mock.url, scenario)
        out = folder / f"callgrind-{chunks}.out"
        gateway = harness.start_gateway(
            harness.python_default(),
            config,
            max_connections=streams + 64,
            log=folder / "gateway.log",
            tree=tree,
            wrapper=("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"),
            ready_within=300,
        )
        port = int(gateway.url.rsplit(":", 1)[1])
        _streams(port, streams, chunks)  # warm-up
        _streams(port, streams, chunks)
        gateway.stop(wait=120)  # callgrind writes its counts on the way out
        found = re.search(r"^(?:totals|summary): (\d+)", out.read_text(), flags=re.M)
        if found is None:
            raise RuntimeError(f"no callgrind totals for {tree}")
        return int(found.group(1))
    finally:
        mock.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--interval-ms", type=float, default=50.0)
    parser.add_argument("--tree", type=Path, action="append", default=[])
    args = parser.parse_args()
    trees = [harness.ROOT, *(tree.resolve() for tree in args.tree)]
    slow = 2 * args.interval_ms
    print(
        f"| tree | instructions per relayed chunk | at {args.interval_ms:g} ms | at {slow:g} ms |"
    )
    print("|---|---:|---:|---:|")
    for tree in trees:
        # Byte-compiled first: a run that compiled the modules would count the compiler.
        subprocess.run(
            [
                str(harness.python_default()),
                "-m",
                "compileall",
                "-q",
                str(tree / "contract"),
                str(tree / "gateway_image"),
            ],
            check=True,
        )
        fast = per_chunk(tree, args.streams, args.interval_ms)
        slower = per_chunk(tree, args.streams, slow)
        print(f"| {tree} | {2 * fast - slower:,.0f} | {fast:,.0f} | {slower:,.0f} |", flush=True)


def per_chunk(tree: Path, streams: int, interval_ms: float) -> float:
    """Instructions per extra chunk at this interval (the timers' work in the time included)."""
    with tempfile.TemporaryDirectory(prefix="tiergate-chunks-") as name:
        folder = Path(name)
        few = instructions(tree, streams, FEW, interval_ms, folder)
        many = instructions(tree, streams, MANY, interval_ms, folder)
    # Two passes each (a warm-up and one more): they differ by the extra chunks.
    return (many - few) / (2 * streams * (MANY - FEW))


if __name__ == "__main__":
    main()
