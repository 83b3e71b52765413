"""Each container image installs only its runtime: hash-locked, complete, nothing else.

The static checks read the Dockerfiles and requirement files; the ``slow`` test builds a venv
exactly as each Dockerfile builds the image (from PyPI, no Docker needed), imports every
runtime module in it and checks that the CLI, the dev kit and the dev dependencies are absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.images import (
    GATEWAY,
    OPERATOR,
    Image,
    image_venv,
    import_everything,
    importable,
    locked_requirements,
)

IMAGES = [pytest.param(OPERATOR, id="operator"), pytest.param(GATEWAY, id="gateway")]


@pytest.mark.parametrize("image", IMAGES)
def test_every_locked_requirement_is_pinned_and_hashed(image: Image) -> None:
    locked = locked_requirements(image.requirements)
    assert locked
    for name, (version, *options) in locked.items():
        assert re.fullmatch(r"\d+(\.\d+)+(\.post\d+)?", version), f"{name}=={version}"
        assert options, f"{name} has no --hash (run scripts/lock-image-requirements.py)"
        assert all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", o) for o in options), name


@pytest.mark.parametrize("image", IMAGES)
def test_the_packages_declared_pins_are_the_locked_ones(image: Image) -> None:
    locked = {
        name: version for name, (version, *_) in locked_requirements(image.requirements).items()
    }
    drift = {
        name: (declared, locked.get(name))
        for name, declared in image.declared_pins().items()
        if locked.get(name) != declared
    }
    assert not drift, f"{image.requirements} differs from the packages' pyproject.toml: {drift}"


@pytest.mark.parametrize("image", IMAGES)
def test_the_dockerfile_is_pinned_non_root_and_installs_only_locked_wheels(image: Image) -> None:
    text = image.dockerfile.read_text()
    bases = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert len(bases) == 2
    assert all(re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base) for base in bases), bases
    assert re.search(r"^USER 10001:10001", text, flags=re.M)
    requirements = image.requirements.relative_to(image.dockerfile.parents[1])
    assert re.search(rf"^COPY {re.escape(str(requirements))} ", text, flags=re.M)
    assert re.search(
        r"pip install --require-hashes --no-deps --only-binary=:all: -r \S*requirements\.txt", text
    ), "the image must install exactly the hash-locked wheels"
    copied = re.findall(r"^COPY (\S+)/ /src/\1/$", text, flags=re.M)
    assert copied == [d.name for d in image.package_dirs], "copies exactly its packages' folders"
    assert re.search(r"pip install --no-deps " + " ".join(f"/src/{c}" for c in copied), text)
    assert f'ENTRYPOINT ["python", "-m", "{image.runtime_packages[-1]}"]' in text


@pytest.mark.slow
@pytest.mark.parametrize("image", IMAGES)
def test_an_image_venv_holds_its_whole_runtime_and_nothing_else(
    image: Image, tmp_path: Path
) -> None:
    python = image_venv(image, tmp_path / "venv")
    import_everything(python, *image.runtime_packages)
    assert importable(python, *image.absent) == []
    assert importable(python, *image.runtime_packages) == list(image.runtime_packages)
