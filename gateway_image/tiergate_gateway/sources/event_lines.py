"""A Kubernetes watch stream cut into its events: one JSON document per line.

Lines are split by hand, with no per-line size limit below ``MAX_EVENT_BYTES``: a
ConfigMap near its 1 MiB cap is one line of that size, which aiohttp's ``readline``
refuses above 512 KiB (that failure, retried with a backoff that never reset, was
what made large configs serve seconds late).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable
from typing import Protocol

__all__ = ["MAX_EVENT_BYTES", "event_lines"]

# One watch event is one JSON line holding the whole ConfigMap (at most 1 MiB of data, escaped,
# plus metadata, plus a kubectl last-applied annotation); anything far larger is not a ConfigMap.
MAX_EVENT_BYTES = 16 * 1024 * 1024


class _Stream(Protocol):
    def readany(self) -> Awaitable[bytes]: ...


async def event_lines(stream: _Stream, limit: int = MAX_EVENT_BYTES) -> AsyncGenerator[bytes, None]:
    """The non-empty newline-separated lines of ``stream``, each as soon as its newline arrives."""
    buf = bytearray()
    scanned = 0  # bytes of ``buf`` already known to hold no newline
    while chunk := await stream.readany():
        buf += chunk
        while (end := buf.find(b"\n", scanned)) >= 0:
            line = bytes(buf[:end])
            del buf[: end + 1]
            scanned = 0
            if line.strip():
                yield line
        scanned = len(buf)
        if scanned > limit:
            raise ValueError(f"a watch event is larger than {limit} bytes")
    if buf.strip():
        yield bytes(buf)
