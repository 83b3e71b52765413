"""What each container image installs, and a venv built the way its Dockerfile builds it.

An image installs its hash-locked ``requirements.txt`` (``--require-hashes --no-deps``),
then its own packages without resolving anything. ``image_venv`` does the same in a
temporary venv, so a test can prove the runtime is complete (``pip check``, every module
imports) and holds nothing else (no CLI, no dev kit, no test or dev dependency).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
import venv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CLI_PACKAGE_DIRS",
    "CLI_REQUIREMENTS",
    "DEV_ONLY",
    "GATEWAY",
    "OPERATOR",
    "REPO",
    "Image",
    "image_venv",
    "import_everything",
    "importable",
    "locked_requirements",
    "locked_venv",
    "run",
]

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Image:
    name: str
    dockerfile: Path
    requirements: Path  # hash-locked, installed --no-deps
    package_dirs: tuple[Path, ...]  # installed into the image, in order
    runtime_packages: tuple[str, ...]  # import names that must be complete in it
    absent: tuple[str, ...]  # import names that must not be there

    def declared_pins(self) -> dict[str, str]:
        """Every ``name==version`` the image's packages declare (their own excluded)."""
        pins: dict[str, str] = {}
        for directory in self.package_dirs:
            project = tomllib.loads((directory / "pyproject.toml").read_text())["project"]
            for requirement in project["dependencies"]:
                name, _, version = requirement.partition("==")
                if not canonical(name).startswith("tiergate-"):
                    pins[canonical(name)] = version
        return pins


DEV_ONLY = ("tiergate_cli", "tiergate_devkit", "openai", "httpx", "pytest", "hypothesis", "psutil")

OPERATOR = Image(
    name="operator",
    dockerfile=REPO / "operator" / "Dockerfile",
    requirements=REPO / "operator" / "requirements.txt",
    package_dirs=(REPO / "contract", REPO / "operator"),
    runtime_packages=("tiergate_contract", "tiergate_operator"),
    absent=(*DEV_ONLY, "tiergate_gateway", "uvicorn", "uvloop", "httptools", "redis"),
)
GATEWAY = Image(
    name="gateway",
    dockerfile=REPO / "gateway_image" / "Dockerfile",
    requirements=REPO / "gateway_image" / "requirements.txt",
    package_dirs=(REPO / "contract", REPO / "gateway_image"),
    runtime_packages=("tiergate_contract", "tiergate_gateway"),
    absent=(*DEV_ONLY, "tiergate_operator", "kopf", "kubernetes", "uvicorn"),
)

# The user CLI without the dev kit: its dependencies are those of both images' locked wheels.
CLI_PACKAGE_DIRS = (REPO / "contract", REPO / "operator", REPO / "gateway_image", REPO / "cli")
CLI_REQUIREMENTS = (OPERATOR.requirements, GATEWAY.requirements)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def locked_requirements(path: Path) -> dict[str, list[str]]:
    """``{canonical name: [its options]}`` of a requirements file, continuations joined."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    locked: dict[str, list[str]] = {}
    for line in joined.splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            name, _, version = words[0].partition("==")
            locked[canonical(name)] = [version, *words[1:]]
    return locked


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(map(str, argv))}:\n{result.stdout}{result.stderr}"
    return result


def image_venv(image: Image, root: Path) -> Path:
    """A venv holding exactly what the image installs; returns its python."""
    return locked_venv(root, [image.requirements], image.package_dirs)


_NOT_SOURCES = ("build", "*.egg-info", "__pycache__")


def locked_venv(root: Path, requirements: Sequence[Path], package_dirs: Sequence[Path]) -> Path:
    """A venv of hash-locked wheels (``--no-deps``) and local packages, ``pip check``-ed."""
    venv.EnvBuilder(with_pip=True).create(root)
    python = root / "bin" / "python"
    pip = (python, "-m", "pip", "--disable-pip-version-check", "--quiet")
    locked = [arg for path in requirements for arg in ("-r", path)]
    run(*pip, "install", "--require-hashes", "--no-deps", "--only-binary=:all:", *locked)
    # Built from copies: setuptools leaves build/ and *.egg-info beside the sources it builds.
    sources = root.parent / f"{root.name}-sources"
    copies = [
        shutil.copytree(d, sources / d.name, ignore=shutil.ignore_patterns(*_NOT_SOURCES))
        for d in package_dirs
    ]
    run(*pip, "install", "--no-deps", *copies)
    run(*pip, "check")
    return python


IMPORT_ALL = """
import importlib, pkgutil, sys
names = sys.argv[1:]
for name in names:
    package = importlib.import_module(name)
    for module in pkgutil.walk_packages(package.__path__, name + "."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
print("imported", len(sys.modules))
"""

FIND = """
import importlib.util, sys
print(" ".join(n for n in sys.argv[1:] if importlib.util.find_spec(n) is not None))
"""


def importable(python: Path, *names: str) -> list[str]:
    return run(python, "-c", FIND, *names).stdout.split()


def import_everything(python: Path, *packages: str) -> None:
    run(python, "-c", IMPORT_ALL, *packages)
