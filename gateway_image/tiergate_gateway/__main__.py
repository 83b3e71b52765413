"""``tiergate-gateway``: run the gateway (flags, or ``TIERGATE_GATEWAY_*`` environment variables).

Public entry points for the operator's CLI and tests:
``run(settings, config=None)`` blocks until SIGTERM/SIGINT and drains;
``serve(settings, config=None, stop=None)`` is the same as a coroutine.
With ``--workers N`` (N > 1) a master starts N worker processes sharing the
port through SO_REUSEPORT, with Prometheus multiprocess metrics; limits and
budgets then go through Redis (``--redis-url`` is required; redis://, rediss://,
redis+sentinel:// or redis+cluster://, see ``redis_client``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from tiergate_contract import GatewayConfig
from tiergate_contract.ledger import clock_ahead_for_tests

from . import logs, runtime
from .app import create_gateway
from .settings import DEFAULT_CREDENTIALS_DIR, Settings, parse_buckets

__all__ = ["TUNING_FLAGS", "main", "parse_args", "run", "serve"]

_ENV = "TIERGATE_GATEWAY_"
# For tests only (no flag, not a tuning key, so no chart value or ConfigMap sets it): the
# calendar budgets are counted in runs this many seconds ahead of the system clock, so a
# month's turn can be tested without waiting for one. Read by ``serve``.
_TEST_CLOCK = _ENV + "TEST_CLOCK_OFFSET_SECONDS"


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(_ENV + name, default)


def _buckets(text: str) -> tuple[float, ...]:
    try:
        return parse_buckets(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# (Settings field, type, help): each is a flag --<field with dashes> and a variable
# TIERGATE_GATEWAY_<FIELD>, defaulting to Settings' default.
TUNING_FLAGS: tuple[tuple[str, Callable[[str], object], str], ...] = (
    ("max_line_bytes", int, "longest request line or header line"),
    ("max_header_bytes", int, "all header lines of a request together"),
    ("max_headers", int, "header lines per request"),
    ("max_body_bytes", int, "request body; a larger one is refused with 413"),
    ("header_timeout_seconds", float, "a request's head must arrive within this"),
    ("body_timeout_seconds", float, "its body within this after the head"),
    ("idle_seconds", float, "idle keep-alive connections are closed after this"),
    ("max_connections", int, "open client connections per worker; more are refused"),
    ("max_response_bytes", int, "a non-streamed upstream answer; a larger one is a 502"),
    ("max_json_depth", int, "nesting of a request body; deeper is refused with 400"),
    ("access_log_sample", float, "share of requests in the access log (0 to 1)"),
    ("ttft_buckets", _buckets, "time-to-first-token histogram bounds, seconds, comma-separated"),
    ("overhead_buckets", _buckets, "gateway-overhead histogram bounds, seconds, comma-separated"),
    ("redis_max_connections", int, "Redis commands in flight per process; more wait for one"),
    ("redis_timeout_seconds", float, "to connect to Redis and for each answer"),
    ("lease_margin_seconds", float, "a Redis lease outlives its call's deadline by this much"),
    ("spend_report_seconds", float, "how often the spend report is written while there is news"),
    ("spend_heartbeat_seconds", float, "the spend report is written at least this often"),
)


def _add_tuning_flags(parser: argparse.ArgumentParser) -> None:
    defaults = Settings()
    for name, kind, meaning in TUNING_FLAGS:
        variable = name.upper()
        default = getattr(defaults, name)
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=kind(_env(variable) or _flag_text(default)),
            help=f"{meaning} [{variable}]",
        )


def _flag_text(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(str(part) for part in value)
    return str(value)


def _extra_buckets(text: str) -> tuple[float, ...]:
    """Bounds added to a histogram's defaults: none when blank."""
    return _buckets(text) if text.strip() else ()


def parse_args(argv: Sequence[str] | None = None) -> tuple[Settings, bool]:
    """Settings from flags, defaulting to ``TIERGATE_GATEWAY_<FLAG>`` variables. Returns (settings, is_worker)."""
    parser = argparse.ArgumentParser(
        prog="tiergate-gateway", description="tiergate's OpenAI-compatible gateway"
    )
    parser.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="listen address [HOST]")
    parser.add_argument(
        "--port", type=int, default=int(_env("PORT", "8080") or 8080), help="listen port [PORT]"
    )
    parser.add_argument(
        "--config-file",
        type=Path,
        default=_env("CONFIG_FILE"),
        help="config JSON file, hot reloaded [CONFIG_FILE]",
    )
    parser.add_argument(
        "--configmap",
        default=_env("CONFIGMAP"),
        help="watch this ConfigMap (namespace/name), key config.json [CONFIGMAP]",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=_env("KUBECONFIG"),
        help="kubeconfig for --configmap outside a cluster [KUBECONFIG]",
    )
    parser.add_argument(
        "--credentials-dir",
        type=Path,
        default=Path(
            _env("CREDENTIALS_DIR", str(DEFAULT_CREDENTIALS_DIR)) or DEFAULT_CREDENTIALS_DIR
        ),
        help="where upstream credentials are mounted: <dir>/<secret>/<key> [CREDENTIALS_DIR]",
    )
    parser.add_argument(
        "--redis-url",
        default=_env("REDIS_URL"),
        help="share limits and budgets via Redis [REDIS_URL]",
    )
    parser.add_argument(
        "--redis-tls-ca-file",
        type=Path,
        default=_env("REDIS_TLS_CA_FILE"),
        help="CA bundle for rediss:// URLs (default: the system's) [REDIS_TLS_CA_FILE]",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(_env("WORKERS", "1") or 1),
        help="worker processes [WORKERS]",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=float(_env("GRACE_SECONDS", "25") or 25),
        help="time in-flight requests get once the gateway stops accepting [GRACE_SECONDS]",
    )
    parser.add_argument(
        "--drain-delay-seconds",
        type=float,
        default=float(_env("DRAIN_DELAY_SECONDS", "0") or 0),
        help="after SIGTERM, keep serving this long while /readyz answers 503 [DRAIN_DELAY_SECONDS]",
    )
    parser.add_argument(
        "--latency-buckets",
        type=_extra_buckets,
        default=_extra_buckets(_env("LATENCY_BUCKETS", "") or ""),
        help="extra latency histogram bounds in seconds, comma-separated [LATENCY_BUCKETS]",
    )
    _add_tuning_flags(parser)
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"), help="[LOG_LEVEL]")
    parser.add_argument(
        "--log-format",
        choices=("json", "text"),
        default=_env("LOG_FORMAT", "json"),
        help="the gateway's own log lines on stderr; the access log (stdout) is JSON [LOG_FORMAT]",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        settings = Settings(
            host=args.host,
            port=args.port,
            config_file=args.config_file,
            configmap=args.configmap,
            kubeconfig=args.kubeconfig,
            credentials_dir=args.credentials_dir,
            redis_url=args.redis_url,
            redis_tls_ca_file=args.redis_tls_ca_file,
            workers=args.workers,
            grace_seconds=args.grace_seconds,
            drain_delay_seconds=args.drain_delay_seconds,
            latency_buckets=args.latency_buckets,
            log_level=str(args.log_level).upper(),
            log_format=args.log_format,
            **{name: getattr(args, name) for name, _, _ in TUNING_FLAGS},
        )
    except ValueError as exc:
        parser.error(str(exc))
    if settings.config_file is None and settings.configmap is None:
        parser.error("set a config source: --config-file PATH or --configmap NAMESPACE/NAME")
    return settings, bool(args.worker)


async def serve(
    settings: Settings,
    config: GatewayConfig | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Run one gateway process until ``stop`` is set (or SIGTERM/SIGINT), then drain and close."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    gateway = create_gateway(settings, config=config, wall_clock=_test_wall_clock())
    await gateway.start()
    if on_ready is not None:
        on_ready(gateway.port)
    try:
        await stop.wait()
    finally:
        logging.getLogger("tiergate_gateway").info(
            "draining (delay %.0fs, grace %.0fs)",
            settings.drain_delay_seconds,
            settings.grace_seconds,
        )
        await gateway.stop()


def _test_wall_clock() -> Callable[[], datetime] | None:
    clock = clock_ahead_for_tests(os.environ, _TEST_CLOCK)
    if clock is not None:
        logging.getLogger("tiergate_gateway").warning(
            "%s is set: budget months follow a clock %s s ahead (for tests only)",
            _TEST_CLOCK,
            os.environ[_TEST_CLOCK].strip(),
        )
    return clock


def _configure_logging(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format)


def _prepare_process(settings: Settings) -> None:
    """A gateway process's own: its file limit, its collector (see ``runtime``)."""
    runtime.raise_open_file_limit(settings.max_connections)
    runtime.tune_collector()


def _serve_process(settings: Settings, config: GatewayConfig | None = None) -> None:
    import uvloop

    _prepare_process(settings)
    uvloop.run(serve(settings, config, on_ready=lambda _port: runtime.settle_collector()))


def run(settings: Settings, config: GatewayConfig | None = None) -> None:
    """Run the gateway in this process (or as a master of ``settings.workers`` processes)."""
    _configure_logging(settings)
    if settings.workers > 1:
        runtime.raise_open_file_limit(settings.max_connections)  # the workers inherit it
        raise SystemExit(_run_master(settings, sys.argv[1:]))
    _serve_process(settings, config)


def _run_master(settings: Settings, argv: list[str]) -> int:
    """Start the workers, forward SIGTERM/SIGINT to them, and stop them all if one dies.

    A worker that exits on its own takes the others down and the master exits
    non-zero, so Kubernetes restarts the pod instead of leaving it half-served.
    """
    metrics_dir = tempfile.mkdtemp(prefix="tiergate-metrics-")
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir)
    command = [sys.executable, "-m", "tiergate_gateway", *argv, "--worker"]
    children = {
        child.pid: child
        for child in (subprocess.Popen(command, env=env) for _ in range(settings.workers))
    }
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        child = children.pop(pid, None)
        if child is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        child.returncode = code
        worst = max(worst, abs(code))
        if not stopping:
            logging.getLogger("tiergate_gateway").error(
                "worker %d exited with %d: stopping the others", pid, code
            )
            forward(signal.SIGTERM, None)
            worst = max(worst, 1)
    shutil.rmtree(metrics_dir, ignore_errors=True)
    return worst


def main(argv: Sequence[str] | None = None) -> None:
    settings, is_worker = parse_args(argv)
    if is_worker:
        _configure_logging(settings)
        # A worker of a master: same settings, one process, port shared through SO_REUSEPORT.
        _serve_process(settings)
        return
    run(settings)


if __name__ == "__main__":
    main()
