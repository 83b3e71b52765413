"""What ``tiergate dev up`` started, in ``.tiergate/dev/state.json``: processes, ports, paths.

The dev kit writes it; ``tiergate status`` reads it to find a local session's kubeconfig
and gateways.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_DEV_DIR", "DevState", "ProcessRecord"]

DEFAULT_DEV_DIR = Path(".tiergate") / "dev"


@dataclass(frozen=True)
class ProcessRecord:
    """A process started in the background: only signalled while its PID still runs ``argv``."""

    name: str
    pid: int
    argv: tuple[str, ...]
    log: str


@dataclass
class DevState:
    root: Path
    namespace: str = "demo"
    processes: list[ProcessRecord] = field(default_factory=list)
    gateways: dict[str, int] = field(default_factory=dict)  # gateway -> local port
    upstreams: dict[str, int] = field(default_factory=dict)  # mock upstream -> port
    cluster_started: bool = False

    @property
    def cluster_dir(self) -> Path:
        return self.root / "cluster"

    @property
    def kubeconfig(self) -> Path:
        return self.cluster_dir / "admin.kubeconfig"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def credentials(self) -> Path:
        return self.root / "credentials"

    @property
    def path(self) -> Path:
        return self.root / "state.json"

    def gateway_url(self, gateway: str) -> str:
        return f"http://127.0.0.1:{self.gateways[gateway]}"

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        state = asdict(self)
        state["root"] = str(self.root)
        self.path.write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, root: Path) -> DevState | None:
        path = root / "state.json"
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(
            root=Path(raw["root"]),
            namespace=raw["namespace"],
            processes=[
                ProcessRecord(p["name"], int(p["pid"]), tuple(p["argv"]), p["log"])
                for p in raw["processes"]
            ],
            gateways={k: int(v) for k, v in raw["gateways"].items()},
            upstreams={k: int(v) for k, v in raw["upstreams"].items()},
            cluster_started=bool(raw["cluster_started"]),
        )
