"""What the upstream pool's deadline ticker costs with many streams open (a diagnosis of
bench/streams/run.py's figures, not a test).

    .venv/bin/python bench/streams/ticker_cost.py [--streams 1000,3000,10000] [--core 1]

``UpstreamPool`` checks the deadlines of every armed exchange on one ticker, every
``tick_seconds`` (20 ms): a stream stays armed until its body ends (its total deadline), so
each tick visits every open stream. This times ``_Conn.check`` over N armed streams, as the
ticker calls it, and prints the time one tick holds the event loop and the share of a core the
ticks take.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "contract"), str(ROOT / "gateway_image")]

from tiergate_gateway.client import UpstreamPool, _Conn  # noqa: E402


async def tick_seconds(streams: int, rounds: int) -> list[float]:
    loop = asyncio.get_running_loop()
    active: set[_Conn] = set()
    far = loop.time() + 3600
    for _ in range(streams):
        conn = _Conn()
        conn.reset(0)
        assert conn.head is not None
        conn.head.set_result(None)
        conn.token_seen = True  # mid-stream: only the total deadline is left
        conn.arm(active, far, far, far)
    times = []
    for _ in range(rounds):
        now = loop.time()
        started = time.perf_counter()
        for conn in list(active):  # as UpstreamPool._run_ticker does
            conn.check(now)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--streams", type=lambda t: [int(n) for n in t.split(",")], default=[1000, 3000, 10000]
    )
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--core", type=int, default=1, help="pin to this core")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    pool_tick = 0.02
    asyncio.run(_print(args.streams, args.rounds, pool_tick))


async def _print(counts: list[int], rounds: int, pool_tick: float) -> None:
    pool = UpstreamPool()  # the tick the gateway uses
    tick = getattr(pool, "_tick", pool_tick)
    await pool.close()
    print(
        f"| open streams | one tick, median (ms) | one tick, max (ms) | share of a core at {1 / tick:.0f} ticks/s |"
    )
    print("|---:|---:|---:|---:|")
    for streams in counts:
        times = await tick_seconds(streams, rounds)
        median = statistics.median(times)
        print(
            f"| {streams:,} | {median * 1e3:.2f} | {max(times) * 1e3:.2f} | {median / tick * 100:.0f}% |"
        )
    print(f"\n{sys.executable}; load average {os.getloadavg()[0]:.2f} (2 cores, shared)")


if __name__ == "__main__":
    main()
