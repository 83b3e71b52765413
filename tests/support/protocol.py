"""Fakes for byte-level tests of asyncio protocols: a transport that records what is written,
and a stand-in for ``loop.create_connection`` that hands out such transports.

The pattern of uvicorn's ``tests/protocols/test_http.py``: the test plays the peer, feeding
bytes to the protocol and asserting on the exact bytes it writes back, with no socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

__all__ = ["FakeConnector", "FakeTransport", "connect", "eventually", "request_bytes"]


class FakeTransport(asyncio.Transport):
    """Records writes; ``close`` reports ``connection_lost`` on the next loop turn, as asyncio does."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.written = bytearray()
        self.writes = 0  # write calls: one per response is part of the server's design
        self.late_writes = 0  # writes after close, which a real transport drops
        self.closed = False
        self.lost = False  # connection_lost was delivered
        self.reading = True
        self.paused_times = 0
        self.eof_written = False  # write_eof: the protocol will send nothing more

    # -- what the protocol calls -----------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            self.late_writes += 1
            return
        self.writes += 1
        self.written += data

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        asyncio.get_running_loop().call_soon(self._lose, None)

    def abort(self) -> None:
        self.close()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    @property
    def finished(self) -> bool:
        """The protocol is done with this connection: closed, or its write side shut."""
        return self.closed or self.eof_written

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        if self.reading:
            self.paused_times += 1
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    # -- what the test (the peer) does ------------------------------------
    def feed(self, data: bytes) -> None:
        """Bytes from the peer."""
        assert not self.lost, "the connection is gone"
        self.protocol.data_received(data)

    def feed_in_pieces(self, data: bytes, size: int) -> None:
        for start in range(0, len(data), size):
            self.feed(data[start : start + size])

    def peer_eof(self) -> None:
        """The peer half-closes (FIN); asyncio closes the transport unless the protocol keeps it."""
        if not self.protocol.eof_received():
            self.close()

    def peer_reset(self) -> None:
        """The peer resets the connection: ``connection_lost`` at once, with an error."""
        self.closed = True
        self._lose(ConnectionResetError("connection reset by peer"))

    def take(self) -> bytes:
        """What was written since the last ``take``."""
        data = bytes(self.written)
        self.written.clear()
        return data

    def _lose(self, exc: Exception | None) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(exc)


def connect(protocol: asyncio.Protocol) -> FakeTransport:
    transport = FakeTransport(protocol)
    protocol.connection_made(transport)
    return transport


async def eventually(condition: Callable[[], bool], within: float = 2.0) -> None:
    """Let the loop run until ``condition`` holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    spins = 0
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        spins += 1
        await asyncio.sleep(0 if spins < 100 else 0.001)  # loop turns first, then real time


def request_bytes(
    method: str = "GET",
    path: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> bytes:
    """One HTTP/1.1 request; a body gets a content-length."""
    lines = [f"{method} {path} HTTP/1.1", "host: gateway"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    if body:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class FakeConnector:
    """Stands in for ``loop.create_connection``: each dial gets a ``FakeTransport`` the test answers.

    ``refuse`` makes dials fail with that error; ``hang`` makes them never finish.
    """

    def __init__(self) -> None:
        self.transports: list[FakeTransport] = []
        self.dials: list[tuple[str, int, dict[str, Any]]] = []
        self.refuse: OSError | None = None
        self.hang = False

    async def create_connection(
        self, factory: Callable[[], asyncio.Protocol], host: str, port: int, **options: Any
    ) -> tuple[FakeTransport, asyncio.Protocol]:
        self.dials.append((host, port, options))
        if self.refuse is not None:
            raise self.refuse
        if self.hang:
            await asyncio.Event().wait()
        protocol = factory()
        transport = connect(protocol)
        self.transports.append(transport)
        return transport, protocol

    @property
    def last(self) -> FakeTransport:
        assert self.transports, "nothing was dialled"
        return self.transports[-1]
