"""The image's pins agree with pyproject's; the Dockerfile is pinned and runs as non-root."""

from __future__ import annotations

import re
import tomllib

from .helpers import ROOT

IMAGE = ROOT / "gateway_image"


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_image_requirements_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = _pins(project["project"]["dependencies"])
    image = _pins((IMAGE / "requirements.txt").read_text().splitlines())
    for name in (
        "aiohttp",
        "httptools",
        "uvloop",
        "orjson",
        "pydantic",
        "prometheus-client",
        "redis",
        "pyyaml",
    ):
        assert image[name] == declared[name], name
    assert all(re.fullmatch(r"\d+(\.\d+)+", version) for version in image.values()), image


def test_dockerfile_is_pinned_and_non_root():
    text = (IMAGE / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert bases
    assert all(re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base) for base in bases), bases
    assert re.search(r"^USER 10001", text, flags=re.M)
    assert "requirements.txt" in text
    assert '"-m", "tiergate_gateway"' in text
