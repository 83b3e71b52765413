"""The bad manifests of tests/data/invalid-manifests and what each must be rejected with.

Each file starts with ``# expect: <the API server's message>`` and, when the pydantic
models mirror the rule, ``# model-expect: <part of the model's message>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

FOLDER = Path(__file__).parents[1] / "data" / "invalid-manifests"


@dataclass(frozen=True)
class InvalidManifest:
    path: Path
    server_message: str
    model_message: str | None

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def body(self) -> dict[str, Any]:
        return yaml.safe_load(self.text)  # type: ignore[no-any-return]


def _header(text: str, field: str) -> str | None:
    prefix = f"# {field}: "
    return next(
        (line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)), None
    )


def invalid_manifests() -> list[InvalidManifest]:
    manifests = []
    for path in sorted(FOLDER.glob("*.yaml")):
        text = path.read_text()
        server_message = _header(text, "expect")
        assert server_message, f"{path.name} has no '# expect:' header"
        manifests.append(InvalidManifest(path, server_message, _header(text, "model-expect")))
    return manifests
