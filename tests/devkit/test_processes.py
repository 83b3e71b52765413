"""Background processes are stopped by PID, and only while the PID still runs their command."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from tests.support.kube import eventually
from tiergate_devkit.cluster import ControlPlane, stop
from tiergate_devkit.processes import ProcessRecord, is_running, spawn, stop_process

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
# Ignores SIGTERM, so only the SIGKILL after the grace period ends it.
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('armed', flush=True); time.sleep(60)",
]


def _sleeper(tmp_path: Path, name: str = "sleeper") -> ProcessRecord:
    return spawn(name, SLEEP, {}, tmp_path / f"{name}.log")


def _reused_pid(record: ProcessRecord) -> ProcessRecord:
    """A record of the same PID with another command line: what a reused PID looks like."""
    return replace(record, argv=("/usr/bin/something", "else"))


def test_a_child_process_is_stopped(tmp_path: Path) -> None:
    record = _sleeper(tmp_path)
    assert is_running(record)
    assert stop_process(record, grace=5)
    assert not is_running(record)
    assert not stop_process(record)  # stopping it again is a no-op


def test_a_reused_pid_is_left_alone(tmp_path: Path) -> None:
    record = _sleeper(tmp_path)
    try:
        assert not is_running(_reused_pid(record))
        assert not stop_process(_reused_pid(record), grace=1)
        assert is_running(record)
    finally:
        stop_process(record, grace=5)


def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    record = spawn("stubborn", STUBBORN, {}, log)
    eventually(lambda: "armed" in log.read_text(), timeout=10, interval=0.01, what="SIG_IGN set")
    assert stop_process(record, grace=0.3)
    assert not is_running(record)


def test_the_control_plane_stops_only_its_recorded_processes(tmp_path: Path) -> None:
    component, bystander = _sleeper(tmp_path, "etcd"), _sleeper(tmp_path, "bystander")
    try:
        plane = ControlPlane(tmp_path, tmp_path, 0, "admin", "operator")
        plane.processes += [component, _reused_pid(bystander)]
        plane.save()
        assert ControlPlane.load(tmp_path).processes == plane.processes
        assert stop(tmp_path, grace=5) == ["etcd"]
        assert not is_running(component)
        assert is_running(bystander)
        assert ControlPlane.load(tmp_path).processes == []
    finally:
        stop_process(bystander, grace=5)
