"""Processes the dev kit starts in the background, and their stopping: by PID, never by name.

Each is recorded with its exact command line; a PID is only signalled while
``/proc/<pid>/cmdline`` still shows that command (a reused PID is left alone).
``dev up`` / ``dev down`` and the local control plane both go through here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiergate_cli.devstate import ProcessRecord

__all__ = [
    "ProcessRecord",
    "Started",
    "is_running",
    "record_from_json",
    "spawn",
    "start_process",
    "stop_process",
    "wait_for_http",
]


@dataclass(frozen=True)
class Started:
    record: ProcessRecord
    process: subprocess.Popen[bytes]  # the child, for its exit code while it starts


def start_process(
    name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> Started:
    """Start ``argv`` in its own session (a Ctrl-C in the terminal does not reach it), logging
    to ``log``; ``env`` defaults to this process's environment."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(argv),
            env=None if env is None else dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    record = ProcessRecord(name, process.pid, tuple(argv), str(log))
    # Popen may return a moment before the exec shows in /proc: wait, so is_running is exact.
    deadline = time.monotonic() + 5
    while not is_running(record) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return Started(record, process)


def spawn(name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> ProcessRecord:
    """``start_process``, for callers that only keep the record."""
    return start_process(name, argv, log, env).record


def record_from_json(raw: Mapping[str, Any]) -> ProcessRecord:
    return ProcessRecord(raw["name"], int(raw["pid"]), tuple(raw["argv"]), raw["log"])


def is_running(record: ProcessRecord) -> bool:
    try:
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes()
    except OSError:
        return False
    return tuple(part.decode() for part in cmdline.split(b"\0") if part) == record.argv


def _reap(pid: int) -> None:
    """Collect our own child once it exited, so it stops showing in /proc as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_process(record: ProcessRecord, grace: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after ``grace`` seconds; False when it was not running."""
    if not is_running(record):
        return False
    with contextlib.suppress(ProcessLookupError):  # it may exit between the check and the kill
        os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not is_running(record):
            return True
        time.sleep(0.05)
    if is_running(record):
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
        time.sleep(0.1)
        _reap(record.pid)
    return True


def wait_for_http(url: str, record: ProcessRecord, timeout: float = 30.0) -> None:
    """Until ``url`` answers 200; raises RuntimeError (with the log's tail) if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if not is_running(record) or time.monotonic() > deadline:
            tail = "\n".join(Path(record.log).read_text(errors="replace").splitlines()[-6:])
            state = "exited" if not is_running(record) else f"is not ready after {timeout:.0f} s"
            raise RuntimeError(f"{record.name} {state} (log {record.log}):\n{tail}")
        time.sleep(0.1)
