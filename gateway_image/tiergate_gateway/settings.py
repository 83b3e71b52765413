"""Gateway settings: CLI flags, with ``TIERGATE_GATEWAY_*`` environment variables as defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .server import ServerLimits

__all__ = ["DEFAULT_CREDENTIALS_DIR", "Settings"]

DEFAULT_CREDENTIALS_DIR = Path("/var/run/tiergate/credentials")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a gateway process needs besides its config.

    At most one config source: ``config_file`` (hot reloaded) or ``configmap``
    (``namespace/name``, watched through the Kubernetes API); none when the
    config is handed over in-process (``run(settings, config)``).
    ``redis_url`` switches limits and budgets to Redis (needed for several
    workers or replicas to share them).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    config_file: Path | None = None
    configmap: str | None = None
    kubeconfig: Path | None = None
    credentials_dir: Path = DEFAULT_CREDENTIALS_DIR
    redis_url: str | None = None
    workers: int = 1
    grace_seconds: float = 25.0
    # What one client may cost while its request is read: see ServerLimits.
    max_body_bytes: int = 8 * 1024 * 1024
    max_line_bytes: int = 8 * 1024
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    idle_seconds: float = 75.0
    max_connections: int = 2048
    reload_interval_seconds: float = 0.25
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.config_file is not None and self.configmap is not None:
            raise ValueError("set one config source: a config file or a ConfigMap, not both")
        if self.configmap is not None and self.configmap.count("/") != 1:
            raise ValueError(f"configmap {self.configmap!r} is not namespace/name")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers {self.workers} is not between 1 and 64")
        if self.workers > 1 and self.redis_url is None:
            raise ValueError(
                "several workers need a redis_url so limits and budgets hold across them"
            )
        self.server_limits()  # raises ValueError for a limit out of range

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
