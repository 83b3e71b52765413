"""The log plumbing on its own: repeats rate-limited per cause, access lines batched whole."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
from datetime import UTC, datetime

from tiergate_gateway.access_log import AccessLog
from tiergate_gateway.logs import JsonFormatter, RepeatFilter


def _record(message: str, cause: str | None = None) -> logging.LogRecord:
    record = logging.LogRecord("tiergate_gateway", logging.ERROR, __file__, 1, message, (), None)
    if cause is not None:
        record.cause = cause
    return record


def test_one_line_per_cause_per_second_and_the_next_counts_the_rest() -> None:
    now = [100.0]
    repeats = RepeatFilter(interval=1.0, clock=lambda: now[0])
    assert repeats.filter(_record("redis down"))
    assert not any(repeats.filter(_record("redis down")) for _ in range(500))
    assert repeats.filter(_record("redis down", cause="other"))  # another cause passes
    now[0] += 1.0
    record = _record("redis down")
    assert repeats.filter(record)
    assert record.suppressed == 500
    line = json.loads(JsonFormatter().format(record))
    assert line["suppressed"] == 500 and line["level"] == "error"
    assert line["message"] == "redis down"


def test_access_lines_are_written_whole_in_batches_of_at_most_4_kib() -> None:
    read, write = os.pipe()
    log = AccessLog(sample=1.0, fd=write)
    try:
        for index in range(100):
            log.write({"time": "", "request_id": f"r{index}", "pad": "x" * 100})
        log.flush()
        os.close(write)
        data = b""
        while chunk := os.read(read, 65536):
            data += chunk
    finally:
        os.close(read)
    lines = [json.loads(line) for line in data.splitlines()]
    assert [line["request_id"] for line in lines] == [f"r{i}" for i in range(100)]
    assert all(line["time"].endswith("Z") for line in lines)


def test_each_write_is_whole_lines_of_at_most_4_kib_stamped_with_the_wall_clock() -> None:
    """A message socket keeps each write apart: none over PIPE_BUF, none ending mid-line."""
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    log = AccessLog(sample=1.0, fd=writer.fileno())
    before = time.time()
    for index in range(200):
        log.write({"time": "", "request_id": f"r{index}", "pad": "x" * (index % 300)})
    log.flush()
    after = time.time()
    writer.close()
    writes = []
    while message := reader.recv(65536):
        writes.append(message)
    reader.close()
    assert len(writes) > 5 and all(len(w) <= 4096 and w.endswith(b"\n") for w in writes)
    lines = [json.loads(line) for w in writes for line in w.splitlines()]
    assert [line["request_id"] for line in lines] == [f"r{i}" for i in range(200)]
    for line in lines:
        parsed = datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        stamp = parsed.replace(tzinfo=UTC).timestamp()
        assert before - 0.001 <= stamp <= after, (line["time"], before, after)


def test_sampling_keeps_about_its_share() -> None:
    log = AccessLog(sample=0.25, fd=-1, rng=random.Random(7))
    kept = sum(log.sampled() for _ in range(10_000))
    assert 2_300 < kept < 2_700
    assert not any(AccessLog(sample=0.0, fd=-1).sampled() for _ in range(100))


def test_a_broken_descriptor_stops_the_access_log_without_raising() -> None:
    read_only = os.open(os.devnull, os.O_RDONLY)
    try:
        log = AccessLog(sample=1.0, fd=read_only)
        log.write({"time": "", "request_id": "r"})
        log.flush()  # EBADF for writing: dropped, not raised
        assert log.broken
    finally:
        os.close(read_only)
