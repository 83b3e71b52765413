"""Run the real operator as a local process against the test control plane."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tiergate_devkit.cluster import ControlPlane

__all__ = ["running_operator"]


@contextmanager
def running_operator(
    plane: ControlPlane,
    log_path: Path,
    *,
    kubeconfig: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m tiergate_operator`` (standalone), logging to ``log_path``; stopped on exit.

    ``kubeconfig`` defaults to the admin's; pass one with a ServiceAccount token to run
    under that identity (e.g. the chart's).
    """
    env = plane.env(kubeconfig) | {"TIERGATE_STANDALONE": "1", "PYTHONUNBUFFERED": "1"}
    env |= extra_env or {}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tiergate_operator"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
