#!/usr/bin/env python3
"""Rewrite the images' requirement files with --hash lines for every pinned wheel.

Usage: python scripts/lock-image-requirements.py [--check] [--cache-dir DIR] [FILE ...]
(default files: gateway_image/requirements.txt and operator/requirements.txt).

Each file's `name==version` pins (and its leading comment block) are kept; for every pin the
script asks pip to download the wheel the image base (python:3.11.14-slim-bookworm: CPython
3.11, glibc 2.36) would install on linux/amd64 and on linux/arm64, and records the sha256 of
each downloaded file (pure-python wheels are shared by both). To bump a dependency, edit its
`==` version in the file and re-run this script. Downloads go to a temporary directory (or
--cache-dir), never into the repository. --check fails instead of writing when a file would
change.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILES = [
    ROOT / "gateway_image" / "requirements.txt",
    ROOT / "operator" / "requirements.txt",
]
PYTHON_VERSION = "3.11"
GLIBC_MINOR = 36  # Debian bookworm's glibc 2.36
ARCHES = {"amd64": ("x86_64", 5), "arm64": ("aarch64", 17)}  # arch -> (machine, oldest glibc)
LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}  # pre-PEP 600 aliases
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def platforms(machine: str, oldest: int) -> list[str]:
    """The manylinux tags glibc 2.36 accepts, most specific first (pip's order in the image)."""
    tags = []
    for minor in range(GLIBC_MINOR, oldest - 1, -1):
        tags.append(f"manylinux_2_{minor}_{machine}")
        if minor in LEGACY and not (machine == "aarch64" and minor < 17):
            tags.append(f"{LEGACY[minor]}_{machine}")
    return tags


def parse(path: Path) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """The leading comment block and the pins (canonical name -> (name, version))."""
    header: list[str] = []
    pins: dict[str, tuple[str, str]] = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pins and stripped.startswith("#"):
            header.append(line)
            continue
        match = PIN.match(stripped)
        if match:
            name, version = match.groups()
            if canonical(name) in pins:
                sys.exit(f"{path}: {name} pinned twice")
            pins[canonical(name)] = (canonical(name), version)
        elif stripped and not stripped.startswith(("#", "--hash")):
            sys.exit(f"{path}: not a `name==version` pin: {line!r}")
    if not pins:
        sys.exit(f"{path}: no pins")
    return header, pins


def wheel_name(filename: str) -> tuple[str, str]:
    if not filename.endswith(".whl"):
        sys.exit(f"pip downloaded a non-wheel: {filename}")
    name, version = filename.split("-")[:2]
    return canonical(name), version


def download(pins: dict[str, tuple[str, str]], arch: str, workdir: Path) -> dict[str, str]:
    """canonical name -> sha256 of the wheel pip picks for this arch."""
    machine, oldest = ARCHES[arch]
    dest = workdir / arch
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.iterdir():
        stale.unlink()
    reqs = workdir / f"pins-{arch}.txt"
    reqs.write_text("".join(f"{name}=={version}\n" for name, version in pins.values()))
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        "--abi",
        "abi3",
        "--abi",
        "none",
        "-d",
        str(dest),
        "-r",
        str(reqs),
    ]
    for platform in platforms(machine, oldest):
        cmd += ["--platform", platform]
    print(f"{arch}: pip download {len(pins)} wheels", file=sys.stderr)
    subprocess.run(cmd, check=True)
    hashes: dict[str, str] = {}
    for wheel in sorted(dest.iterdir()):
        name, version = wheel_name(wheel.name)
        if name not in pins or pins[name][1] != version:
            sys.exit(f"{arch}: unexpected wheel {wheel.name}")
        if name in hashes:
            sys.exit(f"{arch}: two wheels for {name}")
        hashes[name] = hashlib.sha256(wheel.read_bytes()).hexdigest()
    missing = sorted(set(pins) - set(hashes))
    if missing:
        sys.exit(f"{arch}: no wheel for {missing}")
    return hashes


def render(header: list[str], pins: dict[str, tuple[str, str]], hashes: dict[str, set[str]]) -> str:
    lines = list(header)
    for key in sorted(pins):
        name, version = pins[key]
        lines.append(f"{name}=={version} \\")
        digests = sorted(hashes[key])
        for i, digest in enumerate(digests):
            lines.append(f"    --hash=sha256:{digest}" + (" \\" if i < len(digests) - 1 else ""))
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, default=DEFAULT_FILES)
    parser.add_argument("--cache-dir", type=Path, help="keep downloads here (default: temp dir)")
    parser.add_argument("--check", action="store_true", help="fail if a file is not up to date")
    args = parser.parse_args()
    stale = []
    with tempfile.TemporaryDirectory(prefix="tiergate-lock-") as tmp:
        base = args.cache_dir or Path(tmp)
        for index, path in enumerate(args.files):
            header, pins = parse(path)
            hashes: dict[str, set[str]] = {key: set() for key in pins}
            for arch in ARCHES:
                for key, digest in download(pins, arch, base / str(index)).items():
                    hashes[key].add(digest)
            text = render(header, pins, hashes)
            if text == path.read_text():
                print(f"{path}: up to date", file=sys.stderr)
            elif args.check:
                stale.append(path)
                print(f"{path}: hashes out of date", file=sys.stderr)
            else:
                path.write_text(text)
                print(f"{path}: rewrote {len(pins)} pins", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
