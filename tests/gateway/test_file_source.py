"""The hot-reloaded config file: offered when it changes, in place or by a symlink swap."""

from __future__ import annotations

import os
from pathlib import Path

from tiergate_gateway.sources import FileSource


def recording(path: Path) -> tuple[FileSource, list[tuple[bytes, str]]]:
    offered: list[tuple[bytes, str]] = []

    def offer(data: bytes, source: str) -> bool:
        offered.append((data, source))
        return True

    return FileSource(path, offer), offered


def test_a_file_is_offered_once_per_change(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    source, offered = recording(path)
    source.poll()  # not there yet: nothing
    path.write_bytes(b"one")
    source.poll()
    source.poll()
    path.write_bytes(b"two!")
    source.poll()
    assert offered == [(b"one", str(path)), (b"two!", str(path))]


def test_a_configmap_style_symlink_swap_is_seen(tmp_path: Path) -> None:
    # Kubernetes mounts: config.json -> ..data/config.json, ..data -> a timestamped directory.
    for name, data in (("v1", b"first"), ("v2", b"second")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_bytes(data)
    (tmp_path / "..data").symlink_to("v1")
    path = tmp_path / "config.json"
    path.symlink_to("..data/config.json")
    source, offered = recording(path)
    source.poll()
    (tmp_path / "..data_tmp").symlink_to("v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    source.poll()
    assert [data for data, _ in offered] == [b"first", b"second"]
