"""Benchmark: direct vs tiergate vs nginx vs LiteLLM in front of one fast mock upstream.

Not a test: a script that prints a table. Runs on 127.0.0.1 only.

    .venv/bin/python bench/gateway/run.py [--rounds 3] [--duration 3] [--litellm PATH]
        [--gateway-python PATH]

- mock upstream (mock_upstream.py) and wrk on core 1, the server under test on core 0
- scenarios: plain and streaming chat completions, 1 and 50 connections (wrk -t1)
- interleaved: every round runs every scenario against every system; medians of the rounds
- tiergate runs with everything on: auth, limits (requests, tokens, concurrency), a budget,
  weighted routing with a breaker, metrics
- nginx: a plain reverse proxy with upstream keep-alive and no buffering
- LiteLLM proxy from its own venv outside the repo (``--litellm`` = its bin dir; skipped if absent)
- also: RSS of the server under load (max over the 50-connection runs) and time from process
  start to the first successful completion
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "contract"), str(ROOT / "gateway_image")]

from tiergate_contract import (  # noqa: E402
    Budget,
    Credits,
    Limits,
    Pricing,
    Route,
    Target,
    Tier,
    canonical_json,
    hash_client_key,
    seal,
)

KEY = "sk-bench-client"
BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 64}
SERVER_CORE, LOAD_CORE = "0", "1"
DEFAULT_LITELLM = Path.home() / ".cache" / "tiergate-bench" / "litellm" / "bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(url: str, body: dict[str, object], timeout: float = 2.0) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        resp.read()
        return int(resp.status)


def wait_first_completion(
    url: str, started: float, proc: subprocess.Popen[bytes], limit: float = 120
) -> float:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            if post(url, BODY, timeout=5) == 200:
                return time.monotonic() - started
        if time.monotonic() - started > limit:
            raise RuntimeError(f"{url}: no completion within {limit}s")
        time.sleep(0.005)


@dataclass
class System:
    name: str
    url: str
    proc: subprocess.Popen[bytes] | None = None
    startup: float | None = None
    rss: list[int] = field(default_factory=list)

    def tree_rss(self) -> int:
        if self.proc is None:
            return 0
        try:
            root = psutil.Process(self.proc.pid)
            return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            return 0

    def tree(self) -> list[psutil.Process]:
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.tree():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def pause(self, paused: bool) -> None:
        """Stop (SIGSTOP) or continue the process tree: an idle server's timers and background
        tasks would otherwise take the shared core from the system under test."""
        for process in self.tree():
            with contextlib.suppress(psutil.Error):
                if paused:
                    process.suspend()
                else:
                    process.resume()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def taskset(core: str, *command: str) -> list[str]:
    return ["taskset", "-c", core, *command]


def start(
    name: str,
    command: list[str],
    url: str,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> System:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    started = time.monotonic()
    proc = subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT
    )
    system = System(name, url, proc)
    system.startup = wait_first_completion(url, started, proc)
    return system


def tiergate_config(path: Path, mock_port: int, credits_usd: Decimal | None = None) -> None:
    """The benchmark's config; ``credits_usd`` gives the tier prepaid credits too (a tree
    from before credits existed refuses such a config)."""
    pricing = Pricing(input_per_million=Decimal("0.27"), output_per_million=Decimal("1.10"))
    route = Route(
        model="bench",
        targets=(
            Target(
                name="primary",
                base_url=f"http://127.0.0.1:{mock_port}/v1",
                upstream_model="bench-model",
                weight=80,
                priority=0,
                pricing=pricing,
            ),
            Target(
                name="secondary",
                base_url=f"http://127.0.0.1:{mock_port}/v1",
                upstream_model="bench-model",
                weight=20,
                priority=0,
                pricing=pricing,
            ),
        ),
    )
    tier = Tier(
        name="bench",
        key_sha256=(hash_client_key(KEY),),
        models=("bench",),
        limits=Limits(
            requests_per_minute=100_000_000,
            tokens_per_minute=10_000_000_000,
            concurrent_requests=10_000,
        ),
        budget=Budget(soft_usd=Decimal("1000000"), hard_usd=Decimal("2000000")),
        credits=None if credits_usd is None else Credits(granted_usd=credits_usd),
    )
    path.write_bytes(
        canonical_json(seal(gateway="bench", namespace="bench", routes=[route], tiers=[tier]))
    )


def nginx_config(folder: Path, port: int, mock_port: int) -> Path:
    conf = folder / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
  upstream mock {{ server 127.0.0.1:{mock_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
""")
    return conf


def litellm_config(folder: Path, mock_port: int) -> Path:
    conf = folder / "litellm.yaml"
    conf.write_text(f"""
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:{mock_port}/v1
      api_key: sk-upstream
general_settings:
  master_key: {KEY}
litellm_settings:
  telemetry: false
""")
    return conf


def wrk_script(folder: Path, stream: bool) -> Path:
    body = dict(BODY, stream=True) if stream else BODY
    script = folder / ("stream.lua" if stream else "plain.lua")
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{json.dumps(body, separators=(',', ':'))}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {KEY}"\n'
    )
    return script


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, connections: int, duration: float, script: Path) -> tuple[float, float, int]:
    """(requests/s, p50 latency ms, errors) of one wrk run."""
    done = subprocess.run(
        taskset(
            LOAD_CORE,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--latency",
            "-s",
            str(script),
            url,
        ),
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    out = done.stdout
    found_rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    found_p50 = re.search(r"\s50%\s+([\d.]+)(us|ms|s)", out)
    if found_rps is None or found_p50 is None:
        raise RuntimeError(f"wrk against {url} printed no result:\n{out}\n{done.stderr}")
    rps = float(found_rps.group(1))
    value, unit = found_p50.groups()
    errors = 0
    for pattern in (
        r"Non-2xx or 3xx responses: (\d+)",
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
    ):
        match = re.search(pattern, out)
        if match:
            errors += sum(int(g) for g in match.groups())
    return rps, float(value) * _UNITS[unit], errors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument(
        "--litellm", type=Path, default=DEFAULT_LITELLM, help="bin dir of LiteLLM's venv"
    )
    parser.add_argument(
        "--gateway-python",
        type=Path,
        default=Path(sys.executable),
        help="interpreter for tiergate (with the gateway's requirements installed), e.g. a "
        "PGO/LTO build like the image's; default: this one",
    )
    parser.add_argument(
        "--tree",
        type=Path,
        action="append",
        default=[],
        help="also run the gateway of this checkout (e.g. `git worktree add /tmp/base main`), "
        "side by side and interleaved, to compare two versions",
    )
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is required (apt-get install -y wrk util-linux)")
    load_before = os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp(prefix="tiergate-bench-"))
    python = sys.executable
    mock_port = free_port()
    mock = subprocess.Popen(
        taskset(LOAD_CORE, python, str(HERE / "mock_upstream.py"), str(mock_port))
    )
    systems: list[System] = []
    notes: list[str] = []
    try:
        direct_url = f"http://127.0.0.1:{mock_port}/v1/chat/completions"
        while True:
            with contextlib.suppress(OSError):
                post(direct_url, BODY)
                break
            time.sleep(0.01)
        systems.append(System("direct (mock)", direct_url))

        config = folder / "tiergate.json"
        tiergate_config(config, mock_port)
        # This checkout's gateway, then each --tree's, on the same config.
        checkouts = [("tiergate", os.pathsep.join(sys.path[:2]))] + [
            (
                f"tiergate@{tree.name}",
                os.pathsep.join(str(tree / d) for d in ("contract", "gateway_image")),
            )
            for tree in args.tree
        ]
        for name, python_path in checkouts:
            port = free_port()
            command = [str(args.gateway_python), "-m", "tiergate_gateway", "--port", str(port)]
            command += ["--config-file", str(config), "--log-level", "WARNING"]
            systems.append(
                start(
                    name,
                    taskset(SERVER_CORE, *command),
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    {"PYTHONPATH": python_path},
                    folder / f"{name.replace('@', '-')}.log",
                )
            )

        if shutil.which("nginx"):
            port = free_port()
            for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
                (folder / sub).mkdir()
            conf = nginx_config(folder, port, mock_port)
            systems.append(
                start(
                    "nginx",
                    taskset(SERVER_CORE, "nginx", "-p", str(folder), "-c", str(conf)),
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                )
            )
        else:
            notes.append("nginx: not installed (apt-get install -y nginx), skipped")

        litellm = args.litellm / "litellm"
        if litellm.exists():
            port = free_port()
            conf = litellm_config(folder, mock_port)
            try:
                systems.append(
                    start(
                        "LiteLLM",
                        taskset(
                            SERVER_CORE,
                            str(litellm),
                            "--config",
                            str(conf),
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(port),
                            "--num_workers",
                            "1",
                        ),
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        {
                            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                            "LITELLM_LOG": "ERROR",
                            "NO_DOCS": "True",
                        },
                        folder / "litellm.log",
                    )
                )
            except RuntimeError as exc:
                notes.append(f"LiteLLM: failed to start ({exc}), skipped")
        else:
            notes.append(f"LiteLLM: no venv at {args.litellm}, skipped")

        scenarios = [("plain", 1), ("plain", 50), ("stream", 1), ("stream", 50)]
        scripts = {"plain": wrk_script(folder, False), "stream": wrk_script(folder, True)}
        results: dict[tuple[str, str, int], list[tuple[float, float, int]]] = {}
        cpu_per_request: dict[tuple[str, str, int], list[float]] = defaultdict(list)
        for round_ in range(args.rounds):
            for kind, conns in scenarios:
                for system in systems:
                    sampling = conns > 1 and system.proc is not None
                    stop_sampling = threading.Event()

                    def sample(
                        system: System = system, stop: threading.Event = stop_sampling
                    ) -> None:
                        time.sleep(args.duration / 3)
                        while not stop.is_set():
                            system.rss.append(system.tree_rss())
                            stop.wait(0.25)

                    sampler = threading.Thread(target=sample, daemon=True)
                    others = [other for other in systems if other is not system]
                    for other in others:
                        other.pause(True)
                    if sampling:
                        sampler.start()
                    cpu_before = system.cpu_seconds()
                    rps, p50, errors = run_wrk(system.url, conns, args.duration, scripts[kind])
                    if rps > 0 and system.proc is not None:
                        cpu_per_request[(system.name, kind, conns)].append(
                            (system.cpu_seconds() - cpu_before) / (rps * args.duration)
                        )
                    results.setdefault((system.name, kind, conns), []).append((rps, p50, errors))
                    stop_sampling.set()
                    if sampling:
                        sampler.join()
                    for other in others:
                        other.pause(False)
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)

        def med(name: str, kind: str, conns: int, index: int) -> float:
            return statistics.median(r[index] for r in results[(name, kind, conns)])

        print()
        print(
            "| system | plain req/s @50 | stream req/s @50 | plain p50 @1 (ms) | added p50 @1 (ms) "
            "| stream p50 @1 (ms) | CPU per request @50, plain / stream (us) | RSS under load (MB) "
            "| start to first completion (s) | errors |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        base_p50 = med("direct (mock)", "plain", 1, 1)
        for system in systems:
            name = system.name
            errors = sum(r[2] for key, runs in results.items() if key[0] == name for r in runs)
            p50 = med(name, "plain", 1, 1)
            added = "-" if system.proc is None else f"{p50 - base_p50:.3f}"
            rss = f"{max(system.rss) / 2**20:.0f}" if system.rss else "-"
            startup = f"{system.startup:.2f}" if system.startup is not None else "-"
            cpu = " / ".join(
                f"{statistics.median(samples) * 1e6:.0f}"
                if (samples := cpu_per_request.get((name, kind, 50)))
                else "-"
                for kind in ("plain", "stream")
            )
            print(
                f"| {name} | {med(name, 'plain', 50, 0):,.0f} | {med(name, 'stream', 50, 0):,.0f} | {p50:.3f} "
                f"| {added} | {med(name, 'stream', 1, 1):.3f} | {cpu} | {rss} | {startup} | {errors} |"
            )
        print()
        print(
            f"wrk -t1, {args.duration:g}s per run, medians of {args.rounds} interleaved rounds; server on core "
            f"{SERVER_CORE}, wrk and mock on core {LOAD_CORE}; {os.cpu_count()} cores, "
            f"load average before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f}; "
            "the servers not under test are paused (SIGSTOP) during each run"
        )
        print(f"tiergate ran on {args.gateway_python}")
        for note in notes:
            print(f"note: {note}")
    finally:
        for system in systems:
            system.pause(False)
            system.stop()
        mock.terminate()
        mock.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
