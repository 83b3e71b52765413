"""Gateway settings: CLI flags, with ``TIERGATE_GATEWAY_*`` environment variables as defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tiergate_contract.ledger import DEFAULT_SPEND_HEARTBEAT_SECONDS, DEFAULT_SPEND_REPORT_SECONDS

from .redis_client import RedisOptions, parse_url
from .server import ServerLimits

__all__ = [
    "DEFAULT_CREDENTIALS_DIR",
    "DEFAULT_OVERHEAD_BUCKETS",
    "DEFAULT_TTFT_BUCKETS",
    "Settings",
    "parse_buckets",
]

DEFAULT_CREDENTIALS_DIR = Path("/var/run/tiergate/credentials")
# Time to first token: from interactive (0.1 s) to long reasoning (60 s).
DEFAULT_TTFT_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
# The gateway's own time per call: tens of microseconds when all is well.
DEFAULT_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
_MAX_BUCKETS = 40


def parse_buckets(text: str) -> tuple[float, ...]:
    """``"0.1,0.25,0.5"`` -> bucket bounds in seconds (sorted, unique, positive, at most 40)."""
    try:
        bounds = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"buckets {text!r} are not comma-separated numbers of seconds") from None
    _check_buckets("buckets", tuple(bounds))
    return tuple(bounds)


def _check_buckets(name: str, bounds: tuple[float, ...]) -> None:
    if not bounds or len(bounds) > _MAX_BUCKETS:
        raise ValueError(f"{name} needs 1 to {_MAX_BUCKETS} bounds, not {len(bounds)}")
    if any(not 0 < b < 86_400 for b in bounds) or list(bounds) != sorted(set(bounds)):
        raise ValueError(f"{name} {bounds} must be increasing numbers of seconds, above 0")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a gateway process needs besides its config.

    At most one config source: ``config_file`` (hot reloaded) or ``configmap``
    (``namespace/name``, watched through the Kubernetes API); none when the
    config is handed over in-process (``run(settings, config)``).
    ``redis_url`` switches limits and budgets to Redis (needed for several
    workers or replicas to share them); its scheme picks standalone, TLS, Sentinel
    or Cluster (see ``redis_client``).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    config_file: Path | None = None
    configmap: str | None = None
    kubeconfig: Path | None = None
    credentials_dir: Path = DEFAULT_CREDENTIALS_DIR
    redis_url: str | None = None
    # Redis commands in flight at once per process; more wait for a free connection.
    redis_max_connections: int = 50
    # To connect to Redis, and for each answer; past it a call gets 503 limits_unavailable.
    redis_timeout_seconds: float = 2.0
    redis_tls_ca_file: Path | None = None  # CA bundle for rediss:// (default: the system's)
    # A Redis lease outlives its call's deadline (the route's total timeout) by this much.
    lease_margin_seconds: float = 30.0
    # With a ConfigMap source: how often this process's SpendReport is written while there
    # is news (the durable ledger, docs/ledger.md), and at least how often with none (the
    # heartbeat that tells the operator the process is alive; other replicas count a
    # report's reservations for 90 s after it was written, so at most 60 s).
    spend_report_seconds: float = DEFAULT_SPEND_REPORT_SECONDS
    spend_heartbeat_seconds: float = DEFAULT_SPEND_HEARTBEAT_SECONDS
    workers: int = 1
    # On SIGTERM: /readyz answers 503 while the gateway keeps serving for the drain delay
    # (in a cluster, until its endpoint is gone from every Service; the operator renders 5 s),
    # then it stops accepting and in-flight requests get the grace period.
    drain_delay_seconds: float = 0.0
    grace_seconds: float = 25.0
    # Extra bounds of the latency histogram (seconds): a bucket at every SLO threshold.
    latency_buckets: tuple[float, ...] = ()
    # What one client may cost while its request is read: see ServerLimits.
    max_body_bytes: int = 8 * 1024 * 1024
    max_line_bytes: int = 8 * 1024
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    idle_seconds: float = 75.0
    max_connections: int = 2048
    # What one upstream answer may cost: a non-streamed answer larger than this is a 502.
    max_response_bytes: int = 32 * 1024 * 1024
    # Nesting a request body may have (objects and arrays); deeper is refused with 400.
    max_json_depth: int = 64
    reload_interval_seconds: float = 0.25
    log_level: str = "INFO"
    log_format: str = "json"  # or "text"
    # The share of requests written to the access log (1: every one, 0: none).
    access_log_sample: float = 1.0
    ttft_buckets: tuple[float, ...] = DEFAULT_TTFT_BUCKETS
    overhead_buckets: tuple[float, ...] = DEFAULT_OVERHEAD_BUCKETS

    def __post_init__(self) -> None:
        if self.config_file is not None and self.configmap is not None:
            raise ValueError("set one config source: a config file or a ConfigMap, not both")
        if self.configmap is not None and self.configmap.count("/") != 1:
            raise ValueError(f"configmap {self.configmap!r} is not namespace/name")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")
        if not 0 <= self.drain_delay_seconds <= 300:
            raise ValueError(f"drain delay {self.drain_delay_seconds} s is not between 0 and 300")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers {self.workers} is not between 1 and 64")
        if self.workers > 1 and self.redis_url is None:
            raise ValueError(
                "several workers need a redis_url so limits and budgets hold across them"
            )
        self.server_limits()  # raises ValueError for a limit out of range
        if self.max_response_bytes < 1024:
            raise ValueError(f"max_response_bytes {self.max_response_bytes} is below 1024")
        if not 2 <= self.max_json_depth <= 200:
            # orjson encodes at most 254 levels: a deeper body could never be sent upstream.
            raise ValueError(f"max_json_depth {self.max_json_depth} is not between 2 and 200")
        if self.log_format not in ("json", "text"):
            raise ValueError(f"log_format {self.log_format!r} is not 'json' or 'text'")
        if not 0 <= self.access_log_sample <= 1:
            raise ValueError(f"access_log_sample {self.access_log_sample} is not between 0 and 1")
        _check_buckets("ttft_buckets", self.ttft_buckets)
        _check_buckets("overhead_buckets", self.overhead_buckets)
        if self.latency_buckets:  # extra bounds: none is fine
            _check_buckets("latency_buckets", self.latency_buckets)
        if self.redis_url is not None:
            parse_url(self.redis_url)  # raises ValueError naming what is wrong
        if not 1 <= self.redis_max_connections <= 10_000:
            raise ValueError(
                f"redis_max_connections {self.redis_max_connections} is not between 1 and 10000"
            )
        if not 0 < self.redis_timeout_seconds <= 60:
            raise ValueError(
                f"redis_timeout_seconds {self.redis_timeout_seconds} is not in (0, 60]"
            )
        if not 0.1 <= self.spend_report_seconds <= 60:
            raise ValueError(
                f"spend_report_seconds {self.spend_report_seconds} is not between 0.1 and 60"
            )
        if not 0.1 <= self.spend_heartbeat_seconds <= 60:
            raise ValueError(
                f"spend_heartbeat_seconds {self.spend_heartbeat_seconds} is not between 0.1 and 60"
            )
        if not 0 <= self.lease_margin_seconds <= 3600:
            raise ValueError(
                f"lease_margin_seconds {self.lease_margin_seconds} is not between 0 and 3600"
            )

    def redis_options(self) -> RedisOptions | None:
        """How to reach Redis, or None: limits and budgets stay in the process."""
        if self.redis_url is None:
            return None
        return RedisOptions(
            self.redis_url,
            self.redis_max_connections,
            self.redis_timeout_seconds,
            self.redis_tls_ca_file,
        )

    def server_limits(self) -> ServerLimits:
        """The HTTP server's limits (per worker process)."""
        return ServerLimits(
            max_line_bytes=self.max_line_bytes,
            max_header_bytes=self.max_header_bytes,
            max_headers=self.max_headers,
            max_body_bytes=self.max_body_bytes,
            header_timeout_seconds=self.header_timeout_seconds,
            body_timeout_seconds=self.body_timeout_seconds,
            idle_seconds=self.idle_seconds,
            max_connections=self.max_connections,
        )
