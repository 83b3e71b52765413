"""Where the pinned control-plane binaries live (built by the checkout's scripts/build-tools.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tiergate_devkit.checkout import checkout_root

__all__ = ["tools_bin_dir"]


def tools_bin_dir(build: bool = False) -> Path:
    """``$TIERGATE_TOOLS_BIN``, else the build script's cache dir (building it when asked)."""
    if override := os.environ.get("TIERGATE_TOOLS_BIN"):
        return Path(override)
    build_script = checkout_root() / "scripts" / "build-tools.sh"
    args = ["bash", str(build_script)] + ([] if build else ["--print"])
    output = subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True).stdout
    return Path(output.strip().splitlines()[-1])
