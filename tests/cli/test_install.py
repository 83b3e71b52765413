"""The user CLI installs and works without the dev kit or any development dependency."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.images import (
    CLI_PACKAGE_DIRS,
    CLI_REQUIREMENTS,
    DEV_ONLY,
    REPO,
    importable,
    locked_venv,
    run,
)

pytestmark = pytest.mark.slow


def test_the_cli_works_without_the_dev_kit(tmp_path: Path) -> None:
    python = locked_venv(tmp_path / "venv", CLI_REQUIREMENTS, CLI_PACKAGE_DIRS)
    assert importable(python, *DEV_ONLY) == ["tiergate_cli"], "only the CLI, no dev kit or dev tool"
    tiergate = python.parent / "tiergate"
    usage = run(tiergate, "--help").stdout
    assert "render" in usage and "gateway" in usage
    assert "demo" not in usage and "dev up" not in usage, "dev kit commands without the dev kit"
    examples = REPO / "crds" / "examples"
    rendered = run(tiergate, "render", "-f", examples, "-n", "demo", "-o", "json").stdout
    assert '"kind": "Deployment"' in rendered
    assert "$1.25" in run(tiergate, "cost", "-f", examples, "--tokens", "5M").stdout
