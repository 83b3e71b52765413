"""The CLI works without the openai SDK (a development dependency); only the demo needs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_WITHOUT_OPENAI = (
    "import sys; sys.modules['openai'] = None\n"  # any `import openai` now fails
    "from tiergate_operator.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_OPENAI, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_cli_commands_work_without_openai() -> None:
    done = _cli("cost", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: tiergate cost" in done.stdout


def test_demo_without_openai_says_what_is_missing() -> None:
    done = _cli("demo")
    assert done.returncode == 2
    assert "tiergate demo needs the openai SDK" in done.stderr
