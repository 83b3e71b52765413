"""Run the gateway with its garbage-collector pauses recorded (bench/streams/run.py --gc-probe).

    python bench/streams/gc_probe.py OUT.json [gateway flags ...]

With ``TIERGATE_BENCH_PROFILE=PATH`` it also runs the gateway under cProfile and writes the
functions taking the most time of their own to PATH (run.py --profile; cProfile slows every
call, so such a run's latencies are not the gateway's).

Installs a ``gc.callbacks`` hook that times every collection by generation, runs
``tiergate_gateway`` as ``python -m`` would, and writes the counts, total and longest pause of
each generation to OUT.json when the gateway exits (SIGTERM drains and returns). The hook runs
only at collections: the gateway's own code is unchanged.
"""

from __future__ import annotations

import atexit
import cProfile
import gc
import io
import json
import os
import pstats
import runpy
import sys
import time
from pathlib import Path

_started: list[float] = [0.0]
_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}


def _hook(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _pauses[info["generation"]].append(time.perf_counter() - _started[0])


def _write(out: Path) -> None:
    summary = {}
    for generation, pauses in _pauses.items():
        ordered = sorted(pauses)
        summary[str(generation)] = {
            "collections": len(ordered),
            "total_ms": sum(ordered) * 1000,
            "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000 if ordered else 0.0,
            "max_ms": ordered[-1] * 1000 if ordered else 0.0,
            "over_10ms": sum(1 for p in ordered if p > 0.010),
        }
    out.write_text(json.dumps(summary))


def _write_profile(profiler: cProfile.Profile, out: Path) -> None:
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    out.write_text(text.getvalue())


def main() -> None:
    out = Path(sys.argv[1])
    sys.argv = ["tiergate_gateway", *sys.argv[2:]]
    gc.callbacks.append(_hook)
    atexit.register(_write, out)
    profile = os.environ.get("TIERGATE_BENCH_PROFILE")
    if profile:
        profiler = cProfile.Profile()
        atexit.register(_write_profile, profiler, Path(profile))
        profiler.enable()
    runpy.run_module("tiergate_gateway", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
