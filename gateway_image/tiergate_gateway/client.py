"""A lean HTTP/1.1 client for upstream calls: pooled keep-alive connections on httptools.

Chosen by measurement over aiohttp's and httpx's clients, which cost several
hundred microseconds per call on the reference machine (bench/gateway/README.md).
It speaks exactly what an OpenAI-compatible upstream needs: one request per
connection at a time, Content-Length or chunked responses, TLS via ``ssl``; of the
response headers it keeps only those the gateway relays (``_KEPT_HEADERS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import socket
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

__all__ = [
    "BUFFER_BYTES",
    "BodyConsumer",
    "Endpoint",
    "OutOfFiles",
    "UpstreamConnectError",
    "UpstreamPool",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "UpstreamTooLarge",
    "header_lines",
]

# Body bytes a call buffers before the client stops reading its upstream connection; reading
# resumes when the reader takes them. With a slow client this bounds what a call holds (plus
# one socket read), instead of taking the upstream's whole answer into memory.
BUFFER_BYTES = 64 * 1024


class UpstreamConnectError(Exception):
    """The upstream could not be reached (refused, DNS, TLS, connect timeout)."""


class OutOfFiles(Exception):
    """This process has no open file left for an upstream connection (``EMFILE``/``ENFILE``):
    the gateway's own limit, not the upstream's health."""


class UpstreamProtocolError(Exception):
    """The upstream broke the exchange (reset, malformed response, early close)."""


class UpstreamTooLarge(Exception):
    """The upstream's answer is longer than the exchange allows (``max_body_bytes``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit

    def __str__(self) -> str:
        return f"the upstream answer exceeds {self.limit} bytes"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed base URL: where to connect and the path prefix to prepend."""

    scheme: str
    host: str
    port: int
    prefix: str
    host_header: bytes
    prefix_bytes: bytes

    @classmethod
    def parse(cls, base_url: str) -> Endpoint:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url {base_url!r} is not an http(s) URL")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        host_header = parts.hostname if port == default else f"{parts.hostname}:{port}"
        prefix = parts.path.rstrip("/")
        return cls(
            parts.scheme, parts.hostname, port, prefix, host_header.encode("idna"), prefix.encode()
        )


def header_lines(headers: list[tuple[str, str]]) -> bytes:
    """Request header lines for ``UpstreamPool.request``."""
    return "".join([f"{name}: {value}\r\n" for name, value in headers]).encode("latin-1")


# The response headers the gateway relays; the others (providers send a score of them) are
# not decoded at all. httptools handles framing (content-length, transfer-encoding) itself.
_KEPT_HEADERS = frozenset(
    {
        b"content-type",
        b"retry-after",
        b"x-request-id",
        # How much of its rate limit the upstream has left: routing steers away at 0.
        b"x-ratelimit-remaining-requests",
        b"x-ratelimit-remaining-tokens",
        b"x-ratelimit-reset-requests",
        b"x-ratelimit-reset-tokens",
    }
)


class BodyConsumer(Protocol):
    """Takes a body as it arrives, in the connection's own callbacks (see
    ``UpstreamResponse.stream_into``). Exactly one of ``on_end`` and ``on_error`` ends it."""

    def on_data(self, data: bytes) -> None: ...

    def on_end(self) -> None: ...

    def on_error(self, exc: Exception) -> None: ...


class _Conn(asyncio.Protocol):
    # Slots: no instance dict, one object less for the collector to track per connection.
    __slots__ = (
        "active",
        "body_bytes",
        "buffered",
        "chunks",
        "complete",
        "deadline",
        "failed",
        "first_byte_at",
        "first_token_at",
        "head",
        "headers",
        "loop",
        "max_body_bytes",
        "parser",
        "reading_paused",
        "received_any",
        "sink",
        "status",
        "token_seen",
        "transport",
        "waiter",
    )

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.headers: dict[str, str] = {}
        self.status = 0
        self.head: asyncio.Future[None] | None = None
        self.chunks: deque[bytes] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.complete = False
        self.failed: Exception | None = None
        self.received_any = False
        self.active: set[_Conn] | None = None
        self.first_byte_at = 0.0
        self.first_token_at = 0.0
        self.token_seen = False
        self.deadline = 0.0
        self.buffered = 0  # body bytes received and not yet read
        self.body_bytes = 0  # body bytes received in this exchange
        self.max_body_bytes = 0  # 0: no limit (a stream; its buffer is still bounded)
        self.reading_paused = False
        self.sink: BodyConsumer | None = None  # set: the body goes there, not into ``chunks``

    def reset(self, max_body_bytes: int) -> None:
        # The parser carries over: llhttp parses one keep-alive response after the other.
        self.headers = {}
        self.status = 0
        self.chunks.clear()
        self.complete = False
        self.received_any = False
        self.buffered = 0
        if self.reading_paused:  # a connection given back unread may still be paused
            self.taken()
        self.token_seen = False
        self.body_bytes = 0
        self.max_body_bytes = max_body_bytes
        self.sink = None
        self.head = self.loop.create_future()

    @property
    def usable(self) -> bool:
        return (
            self.failed is None and self.transport is not None and not self.transport.is_closing()
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.complete:
            self._fail(UpstreamProtocolError(f"upstream closed the connection: {exc or 'EOF'}"))
        elif self.failed is None:
            self.failed = UpstreamProtocolError("connection closed")
        # The parser holds this connection's bound methods: swapped for one that holds none,
        # the closed connection is no reference cycle left for a full collection to find.
        self.parser = _DETACHED_PARSER

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"malformed upstream response: {exc}"))
            if self.transport is not None:
                self.transport.close()
            return
        if self.sink is not None and self.chunks:
            self._hand_on()

    def _hand_on(self) -> None:
        """A pushed body's pieces of one read go to the sink as one piece: one write to the
        client however many chunks (events) the upstream's read held."""
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        sink = self.sink
        if sink is not None:
            sink.on_data(data)

    def eof_received(self) -> bool:
        return False

    def arm(
        self, active: set[_Conn], first_byte_at: float, first_token_at: float, deadline: float
    ) -> None:
        """Watch this exchange's deadlines (checked by the pool's ticker): the response head by
        ``first_byte_at``, the first token by ``first_token_at``, everything by ``deadline``."""
        # (Comparisons, not min(): this runs for every request.)
        if first_token_at > deadline:
            first_token_at = deadline
        self.first_byte_at = first_byte_at if first_byte_at < first_token_at else first_token_at
        self.first_token_at = first_token_at
        self.deadline = deadline
        self.active = active
        active.add(self)

    def disarm(self) -> None:
        if self.active is not None:
            self.active.discard(self)
            self.active = None

    def check(self, now: float) -> None:
        if self.complete:
            self.disarm()
            return
        if self.head is None or not self.head.done():
            due, what = self.first_byte_at, "the first-byte timeout"
        elif not self.token_seen and self.first_token_at < self.deadline:
            due, what = self.first_token_at, "the first-token timeout"
        else:
            due, what = self.deadline, "the attempt's total timeout"
        if now < due:
            return
        self._fail(TimeoutError(f"upstream exceeded {what}"))
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        if self.failed is None:
            self.failed = exc
        self.disarm()
        if self.head is not None and not self.head.done():
            self.head.set_exception(exc)
        if self.sink is not None and self.chunks:
            self._hand_on()  # what arrived before the failure
        sink = self.sink
        if sink is not None:
            self.sink = None
            sink.on_error(copy.copy(self.failed))
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key in _KEPT_HEADERS:
            self.headers[key.decode("latin-1")] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.head is not None and not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:  # a stream's body: handed on at the end of this read
            self.chunks.append(body)
            return
        size = len(body)
        self.body_bytes += size
        if self.max_body_bytes and self.body_bytes > self.max_body_bytes:
            self._fail(UpstreamTooLarge(self.max_body_bytes))
            self.chunks.clear()
            if self.transport is not None:
                self.transport.close()
            return
        self.chunks.append(body)
        self.buffered += size
        if self.buffered >= BUFFER_BYTES:
            self.pause()
        self._wake()

    def pause(self) -> None:
        """Stop reading the upstream until ``taken``: TCP pushes back on it."""
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def taken(self) -> None:
        """The reader took the buffered body: read the upstream again if it was paused."""
        self.buffered = 0
        if self.reading_paused:
            self.reading_paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def on_message_complete(self) -> None:
        self.complete = True
        self.disarm()
        if not self.parser.should_keep_alive():
            self.failed = UpstreamProtocolError("not keep-alive")
        if self.sink is not None and self.chunks:
            self._hand_on()
        sink = self.sink
        if sink is not None:
            self.sink = None
            sink.on_end()
        self._wake()


class _NoCallbacks:
    """The protocol of ``_DETACHED_PARSER``: it is told of nothing."""

    __slots__ = ()


# What a closed connection's parser is swapped for (nothing feeds it).
_DETACHED_PARSER = httptools.HttpResponseParser(_NoCallbacks())


class UpstreamResponse:
    """Status and headers of an upstream response; the body is read with ``read``/``read_all``."""

    __slots__ = ("_conn", "_key", "_pool", "_released", "headers", "status")

    def __init__(self, pool: UpstreamPool, key: tuple[str, str, int], conn: _Conn) -> None:
        self._pool = pool
        self._key = key
        self._conn = conn
        self._released = False
        self.status = conn.status
        self.headers = conn.headers

    async def read(self) -> bytes:
        """The next piece of the body as it arrives; ``b""`` at the end."""
        conn = self._conn
        while True:
            if conn.chunks:
                return self._drain()
            if conn.complete:
                self.close()
                return b""
            if conn.failed is not None:
                self.close()
                # A copy: raising the stored one would tie its traceback (and the frames of
                # the reads, with the body read so far) to the connection in a reference
                # cycle, left for the cyclic collector.
                raise copy.copy(conn.failed)
            conn.waiter = conn.loop.create_future()
            try:
                await conn.waiter
            finally:
                conn.waiter = None

    def _drain(self) -> bytes:
        conn = self._conn
        chunks = conn.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        conn.buffered = 0
        if conn.reading_paused:
            conn.taken()
        return data

    def token_arrived(self) -> None:
        """The first token is here: from now on only the total deadline applies, which the
        pool checks less often (see ``UpstreamPool``)."""
        conn = self._conn
        conn.token_seen = True
        if conn.active is not None:
            conn.active.discard(conn)
            conn.active = self._pool._streaming
            conn.active.add(conn)

    def stream_into(self, sink: BodyConsumer) -> None:
        """Hand the rest of the body to ``sink`` as it arrives, from the connection's callbacks:
        no task step and no future per piece (a stream relays thousands of pieces a second).
        What is buffered goes first; the end (or the failure) is told once, maybe at once.
        ``pause_reading``/``resume_reading`` are the sink's backpressure; ``close`` detaches it."""
        conn = self._conn
        if conn.chunks:
            sink.on_data(self._drain())
        if conn.complete:
            sink.on_end()
        elif conn.failed is not None:
            sink.on_error(copy.copy(conn.failed))
        elif not self._released:
            conn.sink = sink

    def pause_reading(self) -> None:
        """Stop reading the upstream (the client is slower than it): TCP pushes back on it."""
        self._conn.pause()

    def resume_reading(self) -> None:
        self._conn.taken()

    def unread_events(self) -> int:
        """SSE data events (``[DONE]`` aside) among the bytes received and not read yet."""
        events = 0
        for chunk in self._conn.chunks:
            events += chunk.count(b"data:") - chunk.count(b"data: [DONE]")
        return events

    def unbounded(self) -> None:
        """Lift ``max_body_bytes`` for this body (a stream): only its buffer stays bounded."""
        self._conn.max_body_bytes = 0

    @property
    def finished(self) -> bool:
        """The whole body has arrived and been read."""
        return self._conn.complete and not self._conn.chunks

    async def read_all(self) -> bytes:
        conn = self._conn
        if conn.complete:  # the common case: the whole body came with the head
            body = self._drain()
            self.close()
            return body
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Give the connection back when the body was read whole, else drop it."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        conn.sink = None
        conn.disarm()
        if conn.complete and conn.usable:
            self._pool.release(self._key, conn)
        elif conn.transport is not None:
            conn.transport.close()


class UpstreamPool:
    """Keep-alive connections per (scheme, host, port), reused most-recent first."""

    def __init__(self, max_idle_per_host: int = 256, tick_seconds: float = 0.02) -> None:
        """Create it inside the event loop it serves (it keeps that loop)."""
        self.loop = asyncio.get_running_loop()
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._max_idle = max_idle_per_host
        self._ssl: ssl.SSLContext | None = None
        # Deadlines are checked by one ticker (every ``tick_seconds``) instead of a timer per
        # exchange: a timer per request cost more than the rest of the client on the hot path.
        self._active: set[_Conn] = set()
        # Streams past their first token: only their total deadline is left (minutes, as a
        # rule), so they are checked once a second, not every tick (10,000 streams checked
        # every 20 ms took a third of a core).
        self._streaming: set[_Conn] = set()
        self._tick = tick_seconds
        self._ticker: asyncio.Task[None] | None = None

    @property
    def ticking(self) -> bool:
        """Is the deadline ticker running? (Only while an exchange is armed.)"""
        return self._ticker is not None

    async def _run_ticker(self) -> None:
        """Check the armed exchanges' deadlines every tick; end once none is left (an idle
        gateway does not wake 50 times a second): ``request`` starts it again."""
        loop = asyncio.get_running_loop()
        streaming_every = max(1, round(1.0 / self._tick))
        ticks = 0
        while self._active or self._streaming:
            await asyncio.sleep(self._tick)
            if self._active:
                now = loop.time()
                for conn in list(self._active):
                    conn.check(now)
            ticks += 1
            if ticks >= streaming_every and self._streaming:
                ticks = 0
                now = loop.time()
                for conn in list(self._streaming):
                    conn.check(now)
        self._ticker = None  # no await since the test above: no exchange was armed meanwhile

    def release(self, key: tuple[str, str, int], conn: _Conn) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < self._max_idle:
            idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    async def _connect(self, endpoint: Endpoint, connect_timeout: float) -> _Conn:
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if endpoint.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    _Conn,
                    endpoint.host,
                    endpoint.port,
                    ssl=tls,
                    server_hostname=endpoint.host if tls else None,
                )
        except TimeoutError as exc:
            raise UpstreamConnectError(
                f"connect to {endpoint.host}:{endpoint.port} timed out"
            ) from exc
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise OutOfFiles(f"no open file left to connect to {endpoint.host}") from exc
            raise UpstreamConnectError(
                f"cannot connect to {endpoint.host}:{endpoint.port}: {exc}"
            ) from exc
        except ssl.SSLError as exc:
            raise UpstreamConnectError(
                f"cannot connect to {endpoint.host}:{endpoint.port}: {exc}"
            ) from exc
        return conn

    async def request(
        self,
        endpoint: Endpoint,
        path: str,
        headers: bytes,
        body: bytes,
        *,
        connect_timeout: float,
        first_byte_timeout: float,
        deadline: float,
        max_body_bytes: int = 0,
        first_token_timeout: float | None = None,
    ) -> UpstreamResponse:
        """POST/GET ``body`` and wait for the response head (status and headers).

        ``headers`` are extra header lines, each ending in CRLF (see ``header_lines``).
        A body longer than ``max_body_bytes`` (if set) fails its read with ``UpstreamTooLarge``;
        whatever the limit, at most ``BUFFER_BYTES`` (and one socket read) wait unread.

        ``deadline`` (event-loop time) bounds the whole exchange, body included: reads
        after it raise ``TimeoutError``, as does a head later than ``first_byte_timeout``, or
        a ``token_arrived`` call later than ``first_token_timeout`` (both from the send).

        A pooled connection the upstream closed while idle is skipped; one it closes as the
        request goes out, before a byte of answer, is replaced by a fresh connection and the
        request sent again (three connections at most, then ``UpstreamProtocolError``). A
        break after the first byte of the answer is never retried.
        """
        loop = self.loop
        key = (endpoint.scheme, endpoint.host, endpoint.port)
        method = b"POST" if body else b"GET"
        payload = b"%s %s%s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n%s\r\n%s" % (
            method,
            endpoint.prefix_bytes,
            path.encode(),
            endpoint.host_header,
            len(body),
            headers,
            body,
        )
        for _ in range(3):
            idle = self._idle.get(key)
            reused = False
            conn: _Conn | None = None
            while idle:
                candidate = idle.pop()
                if candidate.usable:
                    conn, reused = candidate, True
                    break
            if conn is None:
                conn = await self._connect(endpoint, connect_timeout)
            conn.reset(max_body_bytes)
            transport = conn.transport
            assert transport is not None
            assert conn.head is not None
            transport.write(payload)
            if self._ticker is None:
                self._ticker = loop.create_task(self._run_ticker())
            sent_at = loop.time()
            first_token_at = (
                deadline if first_token_timeout is None else sent_at + first_token_timeout
            )
            conn.arm(self._active, sent_at + first_byte_timeout, first_token_at, deadline)
            try:
                await conn.head
            except UpstreamProtocolError:
                transport.close()
                if reused and not conn.received_any:
                    continue  # a stale keep-alive connection: try a fresh one
                raise
            except BaseException:
                conn.disarm()
                transport.close()
                raise
            return UpstreamResponse(self, key, conn)
        raise UpstreamProtocolError("upstream keeps closing connections")

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for idle in self._idle.values():
            for conn in idle:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()
