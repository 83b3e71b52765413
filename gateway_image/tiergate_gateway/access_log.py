"""The access log: one JSON line per request on standard output, written in batches.

A line is a few microseconds of work (one ``orjson.dumps``); lines are batched and
written at most every second (``flush``, called by the app's ticker) or whenever 4 KiB
are pending, each write whole lines of at most ``PIPE_BUF`` bytes where it can, so the
lines of several workers sharing one stdout do not interleave mid-line.
A ``sample`` below 1 keeps that share of requests (each drawn independently).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import orjson

__all__ = ["AccessLog"]

_BATCH_BYTES = 4096  # PIPE_BUF on Linux: a write of at most this much to a pipe is atomic
_NEWLINE = orjson.OPT_APPEND_NEWLINE
_dumps = orjson.dumps
_time_ns = time.time_ns
# ".000Z" to ".999Z": a lookup instead of formatting the milliseconds of every line.
_MILLISECONDS = [f".{ms:03d}Z" for ms in range(1000)]


class AccessLog:
    """Lines to a file descriptor (1: standard output); see the module docstring."""

    def __init__(self, sample: float, fd: int = 1, rng: random.Random | None = None) -> None:
        self.sample = sample
        self._fd = fd
        self._rng = rng or random.Random()
        self._pending: list[bytes] = []
        self._size = 0
        self._second = -1  # the second of ``_stamp``, in milliseconds
        self._stamp = ""
        self.broken = False  # the descriptor failed (e.g. closed): lines are dropped from then on

    def sampled(self) -> bool:
        """Should this request be logged?"""
        sample = self.sample
        return sample >= 1 or (sample > 0 and self._rng.random() < sample)

    def write(self, entry: dict[str, Any]) -> None:
        """Queue one request's line (``time`` is filled in)."""
        if self.broken:
            return
        now_ms = _time_ns() // 1_000_000  # integers: no ``int()`` call, which costs more
        milliseconds = now_ms % 1000
        second = now_ms - milliseconds
        if second != self._second:  # strftime once a second, not once a line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second // 1000))
        entry["time"] = self._stamp + _MILLISECONDS[milliseconds]
        line = _dumps(entry, None, _NEWLINE)  # positional: cheaper than a keyword
        size = self._size + len(line)
        if size > _BATCH_BYTES:
            self.flush()
            size = len(line)
        self._pending.append(line)
        self._size = size

    def flush(self) -> None:
        pending, self._pending, self._size = self._pending, [], 0
        if not pending or self.broken:
            return
        data = memoryview(b"".join(pending))
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except BlockingIOError:
            pass  # a full non-blocking pipe: drop the rest rather than stall the event loop
        except OSError:
            self.broken = True
