"""Small helpers for tests that drive the real control plane with kubectl."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tiergate_operator.devcluster import ControlPlane

__all__ = [
    "CRDS",
    "EXAMPLES",
    "apply_crds",
    "eventually",
    "get",
    "get_or_none",
    "resource_versions",
]

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
EXAMPLES = CRDS / "examples"
T = TypeVar("T")


def eventually(
    check: Callable[[], T | None], timeout: float = 60, interval: float = 0.3, what: str = ""
) -> T:
    """Poll ``check`` until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not within {timeout} s: {what or check.__name__} (last: {last!r})")


def get(plane: ControlPlane, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return json.loads(plane.kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout)  # type: ignore[no-any-return]


def get_or_none(plane: ControlPlane, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = plane.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise AssertionError(result.stderr)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def resource_versions(plane: ControlPlane, namespace: str, kinds: str) -> dict[str, str]:
    """``{kind/name: resourceVersion}`` of every object of ``kinds`` (comma-separated)."""
    items = json.loads(plane.kubectl("-n", namespace, "get", kinds, "-o", "json").stdout)["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}


def apply_crds(plane: ControlPlane) -> None:
    plane.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(CRDS / "modelroutes.yaml"),
        "-f",
        str(CRDS / "apikeytiers.yaml"),
    )
    for crd in ("modelroutes.tiergate.dev", "apikeytiers.tiergate.dev"):
        plane.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")
