"""The image's pins agree with pyproject's and are hash-locked; the Dockerfile is pinned,
installs with --require-hashes and runs as non-root."""

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


def _requirements(text: str) -> list[str]:
    """Logical requirement lines: backslash continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    return [
        line.split("#", 1)[0].strip()
        for line in joined.splitlines()
        if line.split("#", 1)[0].strip()
    ]


def test_image_requirements_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = _pins(project["project"]["dependencies"])
    image = _pins([r.split()[0] for r in _requirements((IMAGE / "requirements.txt").read_text())])
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
    assert re.search(
        r"pip install --require-hashes --no-deps --only-binary=:all: -r \S*requirements\.txt", text
    ), "the image must install exactly the hash-locked wheels"
    assert '"-m", "tiergate_gateway"' in text


def test_every_requirement_is_hash_locked():
    lines = _requirements((IMAGE / "requirements.txt").read_text())
    assert lines
    for line in lines:
        pin, *options = line.split()
        assert re.fullmatch(r"[A-Za-z0-9._-]+==\d+(\.\d+)+", pin), line
        assert options, f"{pin} has no --hash"
        assert all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", o) for o in options), line
