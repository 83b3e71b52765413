"""The gateway's own log lines: JSON (or text) on standard error, repeats rate-limited.

``configure`` installs one handler with ``RepeatFilter``: at most one line per cause per
second, the next line of that cause saying how many were suppressed. A cause is the
logger, level and message template, plus an optional ``extra={"cause": ...}`` (e.g. the
route and target of a failover), so an outage of one dependency cannot flood the log.
The access log (``access_log``) is separate and never rate-limited.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["JsonFormatter", "RepeatFilter", "configure"]

_MAX_CAUSES = 4096


class RepeatFilter(logging.Filter):
    """Let one record per cause through per ``interval`` seconds; count the others."""

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._causes: dict[tuple[Any, ...], list[float]] = {}  # cause -> [last emitted, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        cause = (record.name, record.levelno, record.msg, getattr(record, "cause", None))
        now = self._clock()
        seen = self._causes.get(cause)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            return False
        if seen is None:
            if len(self._causes) >= _MAX_CAUSES:
                self._forget(now)
            self._causes[cause] = [now, 0]
        else:
            record.suppressed = int(seen[1])
            seen[0], seen[1] = now, 0
        return True

    def _forget(self, now: float) -> None:
        stale = [c for c, (last, _) in self._causes.items() if now - last >= self.interval]
        for cause in stale or list(self._causes):  # all quiet causes, or else everything
            del self._causes[cause]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, and cause/suppressed/exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in ("cause", "suppressed"):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        suppressed = getattr(record, "suppressed", None)
        return f"{line} ({suppressed} more like it suppressed)" if suppressed else line


def configure(level: str, format: str = "json") -> None:
    """Log to standard error at ``level`` in ``format`` ("json" or "text"), repeats rate-limited."""
    handler = logging.StreamHandler(sys.stderr)
    if format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            _TextFormatter("%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s")
        )
    handler.addFilter(RepeatFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
