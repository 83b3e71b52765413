"""Upstream credentials from mounted Secret files: ``<credentials_dir>/<secret>/<key>``.

Values are cached and re-read when the file changes (checked at most once per
``recheck_seconds``) and whenever a new config is loaded. A missing or empty
file resolves to ``None``; the caller fails that target. Values are never logged.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tiergate_contract import CredentialRef

__all__ = ["CredentialStore"]


class CredentialStore:
    def __init__(self, directory: Path, recheck_seconds: float = 1.0) -> None:
        self._dir = directory
        self._recheck = recheck_seconds
        # ref -> (value, file identity, last check)
        self._cache: dict[CredentialRef, tuple[str | None, tuple[int, int, int] | None, float]] = {}

    def invalidate(self) -> None:
        self._cache.clear()

    def path(self, ref: CredentialRef) -> Path:
        return self._dir / ref.secret / ref.key

    def get(self, ref: CredentialRef) -> str | None:
        now = time.monotonic()
        cached = self._cache.get(ref)
        if cached is not None and now - cached[2] < self._recheck:
            return cached[0]
        path = self.path(ref)
        if ".." in (ref.secret, ref.key) or "/" in ref.secret or "/" in ref.key:
            value: str | None = None
            identity = None
        else:
            try:
                st = os.stat(path)
                identity = (st.st_ino, st.st_mtime_ns, st.st_size)
                if cached is not None and cached[1] == identity:
                    value = cached[0]
                else:
                    value = path.read_text(encoding="utf-8").strip() or None
            except (OSError, UnicodeDecodeError):
                value, identity = None, None
        if value is not None and any(c in value for c in "\r\n\0"):
            value = None
        self._cache[ref] = (value, identity, now)
        return value
