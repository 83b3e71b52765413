"""A config file, hot reloaded.

Polls ``stat`` (inode, mtime, size) every ``interval``; this sees in-place writes,
renames and Kubernetes' symlink swap of mounted ConfigMaps (``stat`` follows the
``..data`` link), at the cost of one syscall per interval.

A gzip-compressed file (a ConfigMap's ``config.json.gz`` binaryData key, mounted)
is recognised by its magic bytes and unpacked by ``parse_config``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["FileSource"]

_log = logging.getLogger(__name__)


class FileSource:
    def __init__(
        self, path: Path, offer: Callable[[bytes, str], bool], interval: float = 0.25
    ) -> None:
        self._path = path
        self._offer = offer
        self._interval = interval
        self._seen: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def poll(self) -> None:
        """Offer the file if it changed since the last look."""
        identity = self._identity()
        if identity is None or identity == self._seen:
            return
        try:
            data = self._path.read_bytes()
        except OSError as exc:
            _log.warning("cannot read config file %s: %s", self._path, exc)
            return
        self._seen = identity
        self._offer(data, str(self._path))

    async def start(self) -> None:
        self.poll()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.poll()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
