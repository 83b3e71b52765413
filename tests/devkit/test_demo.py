"""``tiergate demo`` end to end: dev up, the SDK through both tiers, split, failover, 429, dev down."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tiergate_cli.devstate import DevState

pytestmark = pytest.mark.cluster

MOCK_PORTS = (9901, 9902, 9903, 9904)  # the examples' targets


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_demo_runs_and_leaves_nothing_behind(tmp_path: Path) -> None:
    if not all(map(_free, MOCK_PORTS)):
        pytest.skip("the examples' upstream ports 9901-9904 are taken (a demo is running?)")
    dev_dir = tmp_path / "dev"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiergate_cli",
            "demo",
            "--dir",
            str(dev_dir),
            "--split-requests",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
        env={**os.environ, "KEEP": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    # 80/20 between primary and secondary: either may answer a single request.
    assert re.search(r"answer: +Hello from (primary|secondary) \(deepseek", out), out
    assert re.search(r"answer: +Hello from (primary|secondary) \(Pro/deepseek", out), (
        out
    )  # acme's channel
    assert "20/20 requests answered while the primary failed" in out
    assert "HTTP 429" in out and "HTTP 401" in out
    assert DevState.load(dev_dir) is None  # torn down
    assert all(map(_free, MOCK_PORTS))
