"""The pinned tools the chart tests run directly (no control plane): helm and kube-score."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from tests.support.chart import REPO


def _versions(path: Path) -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


# tools/versions.env: what scripts/build-tools.sh pins (K8S_VERSION, HELM_VERSION, ...).
TOOLS_VERSIONS = _versions(REPO / "tools" / "versions.env")


class Tools(NamedTuple):
    bin_dir: Path

    @property
    def helm(self) -> Path:
        return self.bin_dir / "helm"

    @property
    def kube_score(self) -> Path:
        return self.bin_dir / "kube-score"
