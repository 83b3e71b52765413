"""Processes of the stream and routing benchmarks: streambench (Go mock and load generator),
the gateway under test, and what they cost (RSS peak, CPU).

Shared by bench/streams/run.py and bench/routing/run.py; not a test. Everything listens on
127.0.0.1 and is pinned to a core with taskset: the server under test on one, the mock and
the load generator on the other.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def gateway_path(tree: Path) -> list[str]:
    """Where the gateway of a checkout is imported from (its contract and gateway packages)."""
    return [str(tree / "contract"), str(tree / "gateway_image")]


GATEWAY_PATH = gateway_path(ROOT)
SERVER_CORE, LOAD_CORE = "0", "1"
KEY = "sk-bench-client"
DEFAULT_LITELLM = Path.home() / ".cache" / "tiergate-bench" / "litellm" / "bin"
# Niceness of every process started here (negative needs CAP_SYS_NICE): on a machine shared with
# other work, a negative value keeps the measured processes from queueing behind it. With
# autogroup scheduling (/proc/sys/kernel/sched_autogroup_enabled) a process's nice only weighs
# against its own session's processes, so each one also gets a session of its own with that nice.
NICE = 0


def raise_file_limit() -> int:
    """Raise this process's open-file limit (children inherit it) to the hard limit; return it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def build_streambench() -> Path:
    """The streambench binary, built by build.sh when its source changed."""
    done = subprocess.run(
        [str(HERE / "build.sh")], capture_output=True, text=True, check=False, timeout=600
    )
    if done.returncode != 0:
        raise SystemExit(f"bench/streams/build.sh failed:\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def taskset(core: str, *command: str) -> list[str]:
    """``command`` pinned to ``core`` at niceness ``NICE`` (nice and taskset exec it: same pid)."""
    return ["nice", "-n", str(NICE), "taskset", "-c", core, *command]


def popen(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``command`` (built with ``taskset``) in a session of its own, whose autogroup gets
    niceness ``NICE`` too."""
    proc = subprocess.Popen(command, start_new_session=NICE != 0, **kwargs)
    if NICE != 0:
        with contextlib.suppress(OSError):
            Path(f"/proc/{proc.pid}/autogroup").write_text(str(NICE))
    return proc


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def load_average() -> float:
    return os.getloadavg()[0]


@dataclass
class Process:
    """A started process (the command runs under taskset, which execs it: same pid)."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str = ""

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def cpu_seconds(self) -> float:
        with contextlib.suppress(psutil.Error):
            times = self.ps.cpu_times()
            return float(times.user + times.system)
        return 0.0

    def cpu_wait_seconds(self) -> float:
        """Time its threads spent runnable but waiting for a CPU (the scheduler's run queue):
        on a shared machine, what other work took from it."""
        total = 0
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int((task / "schedstat").read_text().split()[1])
        return total / 1e9

    def rss(self) -> int:
        with contextlib.suppress(psutil.Error):
            return int(self.ps.memory_info().rss)
        return 0

    def pause(self, paused: bool) -> None:
        """SIGSTOP/SIGCONT: an idle server's timers would otherwise share the measured core."""
        with contextlib.suppress(psutil.Error):
            if paused:
                self.ps.suspend()
            else:
                self.ps.resume()

    def stop(self, wait: float = 15) -> None:
        """SIGTERM, and SIGKILL if it has not exited after ``wait`` seconds."""
        self.pause(False)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_mock(
    binary: Path,
    *,
    chunks: int,
    interval_ms: float,
    ttft_p50_ms: float = 0,
    ttft_p99_ms: float = 0,
    prompt_tokens: int = 100,
    seed: int = 1,
    name: str = "mock",
    log: Path | None = None,
) -> Process:
    """A streambench mock on the load core; its ``url`` is its base (``http://127.0.0.1:PORT``)."""
    command = taskset(
        LOAD_CORE,
        str(binary),
        "mock",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--chunks",
        str(chunks),
        "--interval",
        f"{interval_ms}ms",
        "--ttft-p50",
        f"{ttft_p50_ms}ms",
        "--ttft-p99",
        f"{ttft_p99_ms}ms",
        "--prompt-tokens",
        str(prompt_tokens),
        "--seed",
        str(seed),
    )
    err = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = popen(
        command,
        stdout=subprocess.PIPE,
        stderr=err,
        env={**os.environ, "GOMAXPROCS": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().split()
    if len(line) != 2 or line[0] != "listening":
        proc.kill()
        raise RuntimeError(f"{name}: the mock did not start (printed {line!r})")
    return Process(name, proc, f"http://{line[1]}")


def start_gateway(
    python: Path,
    config: Path,
    *,
    max_connections: int,
    log: Path,
    name: str = "tiergate",
    ready_within: float = 30.0,
    gc_probe: Path | None = None,
    profile: Path | None = None,
    tree: Path = ROOT,
    wrapper: tuple[str, ...] = (),
) -> Process:
    """tiergate on the server core, one worker, reading ``config``; ready when /readyz is 200.
    ``tree``: the checkout whose gateway runs (another one to compare two versions);
    ``wrapper``: a command it runs under (e.g. valgrind's).

    With ``gc_probe`` it runs under gc_probe.py, which writes its collector pauses there (and
    with ``profile`` too, a cProfile summary there)."""
    port = free_port()
    launch = ["-m", "tiergate_gateway"]
    if gc_probe is not None:
        launch = [str(HERE / "gc_probe.py"), str(gc_probe)]
    command = taskset(
        SERVER_CORE,
        *wrapper,
        str(python),
        *launch,
        "--port",
        str(port),
        "--config-file",
        str(config),
        "--log-level",
        "WARNING",
        "--max-connections",
        str(max_connections),
    )
    out = open(log, "ab")  # noqa: SIM115
    proc = popen(
        command,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(gateway_path(tree)),
            **({"TIERGATE_BENCH_PROFILE": str(profile)} if profile else {}),
        },
    )
    gateway = Process(name, proc, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} (log: {log})")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(gateway.url + "/readyz", timeout=1) as resp,
        ):
            if resp.status == 200:
                return gateway
        time.sleep(0.05)
    gateway.stop()
    raise RuntimeError(f"{name} was not ready within {ready_within:.0f}s (log: {log})")


def start_litellm(litellm_bin: Path, folder: Path, mock_url: str, log: Path) -> Process:
    """LiteLLM's proxy (one worker) on the server core, as bench/gateway/run.py starts it."""
    port = free_port()
    conf = folder / "litellm.yaml"
    conf.write_text(f"""
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench-model
      api_base: {mock_url}/v1
      api_key: sk-upstream
general_settings:
  master_key: {KEY}
litellm_settings:
  telemetry: false
""")
    out = open(log, "ab")  # noqa: SIM115
    proc = popen(
        taskset(
            SERVER_CORE,
            str(litellm_bin / "litellm"),
            "--config",
            str(conf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ),
        stdout=out,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "NO_DOCS": "True",
        },
    )
    server = Process("LiteLLM", proc, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"LiteLLM exited with {proc.returncode} (log: {log})")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(server.url + "/health/liveliness", timeout=2) as resp,
        ):
            if resp.status == 200:
                return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"LiteLLM was not ready within 120s (log: {log})")


@dataclass
class Usage:
    """What the measured processes cost during a run: CPU seconds each, and the peak RSS of
    the server under test (sampled every ``every`` seconds)."""

    cpu: dict[str, float] = field(default_factory=dict)
    cpu_wait: dict[str, float] = field(default_factory=dict)
    listen_drops: int = 0
    accept_queue_peak: int = 0
    rss_peak: int = 0
    wall: float = 0.0


class Sampler:
    """Measures CPU time of ``processes`` and the peak RSS of ``server`` over a ``with`` block."""

    def __init__(self, server: Process | None, processes: list[Process], every: float = 0.25):
        self._server = server
        self._processes = processes
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.usage = Usage()
        self._cpu_before: dict[str, float] = {}
        self._wait_before: dict[str, float] = {}
        self._drops_before = 0
        self._started = 0.0

    def _sample(self) -> None:
        while not self._stop.is_set():
            if self._server is not None:
                self.usage.rss_peak = max(self.usage.rss_peak, self._server.rss())
                port = int(self._server.url.rsplit(":", 1)[1])
                self.usage.accept_queue_peak = max(self.usage.accept_queue_peak, accept_queue(port))
            self._stop.wait(self._every)

    def __enter__(self) -> Usage:
        self._cpu_before = {p.name: p.cpu_seconds() for p in self._processes}
        self._wait_before = {p.name: p.cpu_wait_seconds() for p in self._processes}
        self._drops_before = listen_drops()
        self._started = time.monotonic()
        self._thread.start()
        return self.usage

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.usage.wall = time.monotonic() - self._started
        self.usage.cpu = {
            p.name: p.cpu_seconds() - self._cpu_before[p.name] for p in self._processes
        }
        self.usage.listen_drops = listen_drops() - self._drops_before
        self.usage.cpu_wait = {
            p.name: p.cpu_wait_seconds() - self._wait_before[p.name] for p in self._processes
        }


def run_load(
    binary: Path,
    url: str,
    *,
    streams: int,
    ramp_seconds: float,
    timeout_seconds: float,
    prompt_bytes: int = 0,
) -> tuple[dict[str, Any], float]:
    """Run the load generator on the load core: its JSON report and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = popen(
        taskset(
            LOAD_CORE,
            str(binary),
            "load",
            "--url",
            url,
            "--streams",
            str(streams),
            "--ramp",
            f"{ramp_seconds}s",
            "--timeout",
            f"{timeout_seconds}s",
            "--key",
            KEY,
            "--prompt-bytes",
            str(prompt_bytes),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "GOMAXPROCS": "1"},
    )
    try:
        stdout, stderr = proc.communicate(timeout=ramp_seconds + timeout_seconds + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"streambench load failed ({proc.returncode}): {stderr.decode()}")
    # taskset execs the load generator: it is the child whose times RUSAGE_CHILDREN gained.
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return json.loads(stdout), cpu


def listen_drops() -> int:
    """SYNs the kernel dropped because a listening socket's accept queue was full (TcpExt
    ListenDrops, this network namespace: every listener on the machine counts). A dropped SYN
    is sent again after 1 s, 3 s, 7 s, ...: it shows as a late first chunk, not an error."""
    names: list[str] = []
    for line in Path("/proc/net/netstat").read_text().splitlines():
        if not line.startswith("TcpExt:"):
            continue
        if not names:
            names = line.split()[1:]
        else:
            return int(dict(zip(names, line.split()[1:], strict=True)).get("ListenDrops", 0))
    return 0


def accept_queue(port: int) -> int:
    """Connections the kernel completed on 127.0.0.1:``port`` that the server has not accepted
    yet (a listening socket's rx_queue in /proc/net/tcp)."""
    local = f"0100007F:{port:04X}"
    with Path("/proc/net/tcp").open() as lines:
        next(lines)
        for line in lines:
            fields = line.split()
            if fields[1] == local and fields[3] == "0A":  # LISTEN
                return int(fields[4].split(":")[1], 16)
    return 0


def log_lines(path: Path, *needles: str) -> int:
    """How many lines of a log hold any of ``needles``."""
    if not path.exists():
        return 0
    with path.open(errors="replace") as lines:
        return sum(1 for line in lines if any(needle in line for needle in needles))


def python_default() -> Path:
    return Path(sys.executable)
