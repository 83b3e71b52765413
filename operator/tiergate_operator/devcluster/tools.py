"""Where the pinned control-plane binaries live (built by scripts/build-tools.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["REPO_ROOT", "tools_bin_dir"]

REPO_ROOT = Path(__file__).resolve().parents[3]
_BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-tools.sh"


def tools_bin_dir(build: bool = False) -> Path:
    """``$TIERGATE_TOOLS_BIN``, else the build script's cache dir (building it when asked)."""
    if override := os.environ.get("TIERGATE_TOOLS_BIN"):
        return Path(override)
    if not _BUILD_SCRIPT.exists():
        raise FileNotFoundError(
            "set TIERGATE_TOOLS_BIN: scripts/build-tools.sh is not beside this install"
        )
    args = ["bash", str(_BUILD_SCRIPT)] + ([] if build else ["--print"])
    output = subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True).stdout
    return Path(output.strip().splitlines()[-1])
