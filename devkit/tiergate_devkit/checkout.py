"""The tiergate checkout the dev kit works from (its CRDs, examples and tool build script).

The dev kit serves people working in a clone of the repository, so it looks for one
instead of assuming where its own files were installed: ``$TIERGATE_CHECKOUT``, else the
nearest folder at or above the working directory that holds ``crds/`` and
``scripts/build-tools.sh``.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

__all__ = ["CheckoutNotFound", "checkout_root", "crds_dir", "examples_dir"]

_MARKERS = ("crds", "scripts/build-tools.sh")


class CheckoutNotFound(RuntimeError):
    """No tiergate checkout around the working directory (and no $TIERGATE_CHECKOUT)."""


def _is_checkout(path: Path) -> bool:
    return all((path / marker).exists() for marker in _MARKERS)


@cache
def checkout_root() -> Path:
    if override := os.environ.get("TIERGATE_CHECKOUT"):
        root = Path(override).resolve()
        if not _is_checkout(root):
            raise CheckoutNotFound(f"$TIERGATE_CHECKOUT={override} is not a tiergate checkout")
        return root
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if _is_checkout(candidate):
            return candidate
    raise CheckoutNotFound(
        f"no tiergate checkout at or above {here} (looked for crds/ and "
        "scripts/build-tools.sh): run from a clone, or set TIERGATE_CHECKOUT"
    )


def crds_dir() -> Path:
    return checkout_root() / "crds"


def examples_dir() -> Path:
    return crds_dir() / "examples"
