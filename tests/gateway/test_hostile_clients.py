"""Hostile clients against a real gateway process on 127.0.0.1, each with its bounds.

One gateway process with small limits serves the whole module. Each attack runs while a
normal client (the official openai SDK, one keep-alive connection) keeps calling; a
``Watch`` samples the gateway's RSS and CPU time (psutil) meanwhile. Each test states what
the attack may cost the gateway in memory, CPU and time, and how slow the normal client's
calls may get while it runs.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import psutil
import pytest

from tests.support.gateway import (
    STARTUP_KEY,
    GatewayProcess,
    config,
    route,
    target,
    tier,
    write_config,
)
from tests.support.upstream import MockUpstream
from tiergate_contract import Limits

MIB = 1024 * 1024
LINE = 4096
HEADERS = 16 * 1024
BODY = 1 * MIB
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
IDLE = 3.0
CAP = 120
SWEEP = 0.25  # how late a deadline may be noticed (a quarter of the shortest timeout)

# What one attack may cost the gateway, and the normal client meanwhile.
RSS_GROWTH_MIB = 16  # a 64 MiB request took +123 MB before
CPU_SECONDS = 1.0  # the attack's whole window, the normal client's calls included
CLIENT_WORST_SECONDS = 0.5
ATTACK_SECONDS = 1.5  # attacks that take less are repeated for this long  # each normal call (about 2 ms when nothing else runs)


@dataclass
class Figures:
    rss_growth_mib: float
    cpu_seconds: float
    seconds: float
    calls: int
    median_call_ms: float
    worst_call_ms: float

    def check(self, rss_mib: float = RSS_GROWTH_MIB, cpu: float = CPU_SECONDS) -> None:
        assert self.rss_growth_mib < rss_mib, self
        assert self.cpu_seconds < cpu, self
        assert self.calls >= 3, self  # the normal client was served all along
        assert self.worst_call_ms < CLIENT_WORST_SECONDS * 1000, self


@dataclass
class Watch:
    """Samples the gateway's RSS and runs the normal client while an attack runs."""

    gateway: GatewayProcess
    client: openai.OpenAI
    latencies: list[float] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    peak_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Watch:
        assert self.gateway.proc is not None
        self.process = psutil.Process(self.gateway.proc.pid)
        self.call()  # the client's connection is open before the attack
        self.latencies.clear()
        times = self.process.cpu_times()
        self.cpu_before = times.user + times.system
        self.rss_before = self.peak_rss = self.process.memory_info().rss
        self.started = time.monotonic()
        self._threads = [
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._normal_client, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.started
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        times = self.process.cpu_times()
        self.cpu_seconds = times.user + times.system - self.cpu_before

    def call(self) -> None:
        reply = self.client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "hello from up"

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)

    def _normal_client(self) -> None:
        while not self._stop.wait(0.02):
            started = time.monotonic()
            try:
                self.call()
            except BaseException as exc:  # reported by figures()
                self.errors.append(exc)
                return
            self.latencies.append(time.monotonic() - started)

    def figures(self) -> Figures:
        assert not self.errors, self.errors
        result = Figures(
            rss_growth_mib=round((self.peak_rss - self.rss_before) / MIB, 1),
            cpu_seconds=round(self.cpu_seconds, 3),
            seconds=round(self.seconds, 2),
            calls=len(self.latencies),
            median_call_ms=round(statistics.median(self.latencies) * 1000, 1),
            worst_call_ms=round(max(self.latencies) * 1000, 1),
        )
        print(result)  # the figures, for the record (pytest -s)
        return result


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    upstream = MockUpstream("up").start()
    folder: Path = tmp_path_factory.mktemp("hostile")
    path = folder / "config.json"
    unlimited = Limits()
    write_config(
        path,
        config(
            [route("m", target("up", upstream.base_url))],
            [tier("t", STARTUP_KEY, ["m"], limits=unlimited)],
        ),
    )
    limits = {
        "--max-line-bytes": LINE,
        "--max-header-bytes": HEADERS,
        "--max-headers": 50,
        "--max-body-bytes": BODY,
        "--header-timeout-seconds": HEADER_TIMEOUT,
        "--body-timeout-seconds": BODY_TIMEOUT,
        "--idle-seconds": IDLE,
        "--max-connections": CAP,
    }
    flags = [str(part) for pair in limits.items() for part in pair]
    process = GatewayProcess(
        "--config-file", str(path), "--credentials-dir", str(folder), *flags
    ).start()
    yield process
    process.stop()
    upstream.stop()


@pytest.fixture
def watch(gateway: GatewayProcess) -> Iterator[Watch]:
    client = openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=STARTUP_KEY, max_retries=0, timeout=5
    )
    yield Watch(gateway, client)
    client.close()


def connect(gateway: GatewayProcess) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A fixed, small send buffer: what the kernel holds on the attacker's side stays out of
    # the bytes counted as taken by the gateway (loopback autotuning varies it by megabytes).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", gateway.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return sock


@dataclass
class Flooded:
    answer: bytes
    accepted: int  # bytes the gateway took before it closed
    answered_after: float  # seconds from the first byte sent to the first byte of the answer


def flood(sock: socket.socket, head: bytes, filler: bytes, total: int) -> Flooded:
    """Send ``head`` then ``total`` bytes of ``filler`` as fast as the gateway takes them,
    reading its answer meanwhile."""
    answer = bytearray()
    answered = [float("inf")]

    def read() -> None:
        while chunk := _recv(sock):
            answered[0] = min(answered[0], time.monotonic())
            answer.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent = 0
    block = filler * (65536 // len(filler))
    started = time.monotonic()
    try:
        sock.sendall(head)
        while sent < total:
            sent += sock.send(block)
    except OSError:
        pass  # the gateway closed: what it refused need not be sent
    reader.join(5)
    return Flooded(bytes(answer), sent, answered[0] - started)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def closed_within(sockets: list[socket.socket], seconds: float) -> float:
    """Wait until the gateway closed every socket; how long that took."""
    started = time.monotonic()
    for sock in sockets:
        sock.settimeout(max(0.01, started + seconds - time.monotonic()))
        try:
            while sock.recv(65536):
                pass
        except TimeoutError:
            raise AssertionError(f"a connection was still open after {seconds} s") from None
        except OSError:
            pass
    return time.monotonic() - started


def drip(sockets: list[socket.socket], head: bytes, every: float, until: float) -> None:
    """Slowloris: ``head`` a byte at a time on every socket, until ``until`` (monotonic)."""
    position = 0
    while time.monotonic() < until and position < len(head):
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.send(head[position : position + 1])
        position += 1
        time.sleep(every)


# --- one huge request ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "filler", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nx-huge: ", b"a", 431),
        (b"GET /", b"a", 414),
        (b"GET /healthz HTTP/1.1\r\n", b"x-a: b\r\n", 431),  # ever more header lines
        (b"GET /healthz HTTP/1.1\r\n", b"x-a: " + b"b" * 4000 + b"\r\n", 431),  # 16 KiB in all
    ],
    ids=["header-line", "request-line", "many-headers", "header-bytes"],
)
def test_64_mib_heads_are_refused_after_their_limit_at_a_bounded_cost(
    gateway: GatewayProcess, watch: Watch, head: bytes, filler: bytes, status: int
) -> None:
    rounds = []
    with watch:
        while time.monotonic() - watch.started < ATTACK_SECONDS:
            sock = connect(gateway)
            flooded = flood(sock, head, filler, 64 * MIB)
            sock.close()
            rounds.append(flooded.answered_after)
            assert status_of(flooded.answer) == status
            # Read and dropped after the refusal: at most the body limit (and socket buffers).
            assert flooded.accepted < BODY + 8 * MIB
    print(f"{len(rounds)} requests of 64 MiB, each refused in {max(rounds):.3f} s at most")
    assert max(rounds) < 0.5
    figures = watch.figures()
    figures.check()
    assert figures.cpu_seconds / len(rounds) < 0.005  # the normal client's calls included


def test_a_content_length_over_the_limit_is_refused_before_the_body(
    gateway: GatewayProcess, watch: Watch
) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % (1 << 30)
    )
    rounds = []
    with watch:
        while time.monotonic() - watch.started < ATTACK_SECONDS:
            sock = connect(gateway)
            started = time.monotonic()
            sock.sendall(head)
            answer = sock.recv(65536)
            rounds.append(time.monotonic() - started)
            rest = flood(sock, b"", b"{", 64 * MIB)  # the 1 GiB body anyway
            sock.close()
            assert status_of(answer) == 413 and b"request body too large" in answer
            assert rest.accepted < BODY + 8 * MIB and rest.answer == b""
    print(f"{len(rounds)} bodies of 1 GiB announced, each refused in {max(rounds):.3f} s at most")
    assert max(rounds) < 0.5
    figures = watch.figures()
    figures.check()
    assert figures.cpu_seconds / len(rounds) < 0.005


# --- slow clients ----------------------------------------------------------------------------


def test_slowloris_heads_are_dropped_after_the_header_timeout(
    gateway: GatewayProcess, watch: Watch
) -> None:
    sockets = [connect(gateway) for _ in range(100)]
    head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-a: " + b"b" * 100
    with watch:
        started = time.monotonic()
        dripping = threading.Thread(
            target=drip, args=(sockets, head, 0.05, started + 3 * HEADER_TIMEOUT), daemon=True
        )
        dripping.start()
        # From the first byte, not the last: a byte every 50 ms keeps no connection alive.
        took = closed_within(sockets, HEADER_TIMEOUT + 2 * SWEEP + 0.5)
        dripping.join(5)
    for sock in sockets:
        sock.close()
    print(f"100 slowloris heads: all closed {took:.2f} s after the first byte")
    assert took < HEADER_TIMEOUT + 2 * SWEEP + 0.5
    watch.figures().check()


def test_a_slow_body_is_dropped_after_the_body_timeout(
    gateway: GatewayProcess, watch: Watch
) -> None:
    sockets = [connect(gateway) for _ in range(50)]
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 1000\r\n\r\n"
    )
    with watch:
        for sock in sockets:
            sock.sendall(head)
        started = time.monotonic()
        dripping = threading.Thread(
            target=drip, args=(sockets, b"{" * 1000, 0.05, started + 3 * BODY_TIMEOUT), daemon=True
        )
        dripping.start()
        took = closed_within(sockets, BODY_TIMEOUT + 2 * SWEEP + 0.5)
        dripping.join(5)
    for sock in sockets:
        sock.close()
    print(f"50 slow bodies: all closed {took:.2f} s after their heads")
    assert took < BODY_TIMEOUT + 2 * SWEEP + 0.5
    watch.figures().check()


def test_an_idle_keep_alive_connection_is_closed_after_idle_seconds(
    gateway: GatewayProcess,
) -> None:
    sock = connect(gateway)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    assert status_of(sock.recv(65536)) == 200
    started = time.monotonic()
    closed_within([sock], IDLE + 2 * SWEEP + 0.5)
    assert time.monotonic() - started > IDLE - 0.1
    sock.close()


# --- too many connections --------------------------------------------------------------------


def test_connections_over_the_cap_are_refused_at_once_and_the_others_still_served(
    gateway: GatewayProcess, watch: Watch
) -> None:
    with watch:
        assert watch.process.num_fds() < 100
        sockets = [connect(gateway) for _ in range(CAP + 80)]
        time.sleep(0.3)  # a refusal comes at once; an accepted connection waits for a request
        held, refused = [], []
        for sock in sockets:
            sock.setblocking(False)
            try:
                answer = sock.recv(65536)
            except BlockingIOError:
                held.append(sock)
                continue
            assert status_of(answer) == 503, answer
            assert b"too many connections" in answer
            refused.append(sock)
        fds = watch.process.num_fds()
        # The held ones are dropped after the header timeout: the cap frees itself.
        took = closed_within(held, HEADER_TIMEOUT + 2 * SWEEP + 0.5)
    print(
        f"{len(sockets)} connections: {len(refused)} refused with 503 within 0.3 s, "
        f"{len(held)} held and closed {took:.2f} s later, {fds} file descriptors at the peak"
    )
    for sock in sockets:
        sock.close()
    # The normal client's connection is one of the CAP.
    assert len(held) == CAP - 1 and len(refused) == 81
    assert fds < CAP + 40  # the listening socket, upstream connections, files
    watch.figures().check()
