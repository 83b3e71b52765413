"""A small HTTP/1.1 server on asyncio + httptools: keep-alive, chunked streaming, graceful close.

ASGI-free on purpose: on the measured machine uvicorn's ASGI layer cost more
than the gateway's whole routing logic (see bench/gateway/README.md). The
server knows nothing about the gateway: it parses a request, calls
``handler(request)`` and writes the returned ``Response`` or ``StreamResponse``.

A client that goes away (reset or EOF) while its request is handled cancels
the handler task, which cancels any upstream call it is awaiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import httptools

__all__ = ["HttpServer", "Request", "Response", "StreamResponse"]

_log = logging.getLogger("tiergate_gateway.server")

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}
_MAX_HEADERS = 100
_MAX_PIPELINED = 8
_MAX_HEADER_BYTES = 64 * 1024


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


@dataclass(slots=True)
class StreamResponse:
    status: int
    chunks: AsyncIterator[bytes]
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "text/event-stream"


Handler = Callable[[Request], Awaitable[Response | StreamResponse]]


@dataclass(frozen=True, slots=True)
class _Rejection:
    """A request answered with an error and the connection closed, in its turn in the queue."""

    status: int
    message: str


_BODY_TOO_LARGE = _Rejection(413, "request body too large")
_BAD_TARGET = _Rejection(400, "malformed request target")


def _head(status: int, headers: list[tuple[str, str]], content_type: str, extra: bytes) -> bytes:
    text = "".join([f"{name}: {value}\r\n" for name, value in headers])
    return b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\n%s%s" % (
        status,
        _REASONS.get(status, b"Status"),
        content_type.encode("latin-1"),
        text.encode("latin-1"),
        extra,
    )


def _path_of(target: bytes) -> str:
    """The path of a request target; the common ``/plain/path`` without a full URL parse."""
    if target[:1] == b"/" and b"?" not in target and b"#" not in target:
        return target.decode("latin-1")
    return httptools.parse_url(target).path.decode("latin-1")


class _Connection(asyncio.Protocol):
    """One client connection; requests on it are served one after the other."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_count = 0
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._too_large = False
        self._queue: deque[tuple[Request | _Rejection, bool]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._closing = False
        self._problem: tuple[int, str] | None = None
        self._rejected = False
        self.busy = False
        self.last_activity = server.clock()

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._server.connections.discard(self)
        self._writable.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def eof_received(self) -> bool:
        # A client that half-closes has gone away: treat it as a disconnect.
        if self._task is not None and not self._task.done():
            self._task.cancel()
        return False

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self._server.clock()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The parser completed the upgrade request before refusing it: it is not served.
            self._queue.pop()
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            status, message = self._problem or (400, f"malformed HTTP request: {exc}")
            self._reject(status, message)

    # -- httptools callbacks ---------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._header_count = 0
        self._header_bytes = 0
        self._body = []
        self._body_size = 0
        self._too_large = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > 8192:
            self._problem = (414, "request target too long")
            raise httptools.HttpParserError(self._problem[1])

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted per line, not per name: repeated names are joined below, which would let a
        # request of many short duplicates cost quadratic time.
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        if self._header_count > _MAX_HEADERS or self._header_bytes > _MAX_HEADER_BYTES:
            self._problem = (431, f"too many or too large request headers (at most {_MAX_HEADERS})")
            raise httptools.HttpParserError(self._problem[1])
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        # Not while an earlier response is still being written: it would land inside it.
        if (
            self._headers.get("expect", "").lower() == "100-continue"
            and self._transport is not None
            and not self.busy
            and not self._queue
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._server.max_body_bytes:
            self._too_large = True
            self._body = []
        elif not self._too_large:
            self._body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self._parser.should_keep_alive()
        if self._too_large:
            self._queue.append((_BODY_TOO_LARGE, False))
        else:
            try:
                path = _path_of(self._url)
            except httptools.HttpParserInvalidURLError:
                self._queue.append((_BAD_TARGET, False))
            else:
                method = self._parser.get_method().decode("latin-1")
                request = Request(method, path, self._headers, b"".join(self._body))
                self._queue.append((request, keep_alive))
        self._body = []
        if len(self._queue) > _MAX_PIPELINED and self._transport is not None:
            self._transport.pause_reading()  # resumed once the queue is served
        # One task per connection, started with its first request and woken for the next
        # ones: cheaper than a task per request.
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._serve())
        elif self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # -- serving ----------------------------------------------------------
    def _reject(self, status: int, message: str) -> None:
        transport = self._transport
        if transport is None or transport.is_closing() or self._rejected:
            return
        self._rejected = True
        if self.busy or self._queue:
            # Earlier pipelined requests are answered first; the error follows them.
            self._queue.append((_Rejection(status, message), False))
            transport.pause_reading()
            return
        transport.write(self._server.error_bytes(status, message))
        transport.close()

    async def _serve(self) -> None:
        transport = self._transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        while not self._closing:
            if not self._queue:
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            request, keep_alive = self._queue.popleft()
            if not self._queue and not transport.is_reading():
                transport.resume_reading()
            if isinstance(request, _Rejection):
                transport.write(self._server.error_bytes(request.status, request.message))
                transport.close()
                return
            self.busy = True
            try:
                response = await self._server.handler(request)
                keep_alive = keep_alive and not self._server.draining
                await self._write(transport, response, keep_alive)
            except asyncio.CancelledError:
                transport.close()
                raise
            except Exception:
                _log.exception("unhandled error serving %s %s", request.method, request.path)
                transport.write(self._server.error_bytes(500, "internal gateway error"))
                keep_alive = False
            finally:
                self.busy = False
                self._server.request_done()
            if not keep_alive:
                transport.close()
                return

    async def _write(
        self, transport: asyncio.Transport, response: Response | StreamResponse, keep_alive: bool
    ) -> None:
        connection = b"" if keep_alive else b"connection: close\r\n"
        if isinstance(response, Response):
            extra = b"content-length: %d\r\n%s\r\n" % (len(response.body), connection)
            transport.write(
                _head(response.status, response.headers, response.content_type, extra)
                + response.body
            )
            return
        # The head goes out with the first chunk, and the terminating chunk with the last one
        # when the body says it is exhausted: one write per stream in the common case.
        pending = _head(
            response.status,
            response.headers,
            response.content_type,
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n%s\r\n" % connection,
        )
        chunks = response.chunks
        finished = False
        try:
            async for chunk in chunks:
                if self._closing:
                    raise asyncio.CancelledError
                if not chunk:
                    continue
                frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
                if getattr(chunks, "exhausted", False):
                    frame += b"0\r\n\r\n"
                    finished = True
                transport.write(pending + frame if pending else frame)
                pending = b""
                if finished:
                    break
                if not self._writable.is_set():
                    await self._writable.wait()
        except Exception:
            if pending:
                raise  # nothing sent yet: the caller answers with an error
            _log.exception("stream broke off after its head was sent")
            transport.close()
            return
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if not finished:
            transport.write(pending + b"0\r\n\r\n")

    def expired(self, now: float, idle_seconds: float) -> bool:
        return not self.busy and not self._queue and now - self.last_activity > idle_seconds

    def close_if_idle(self) -> None:
        if not self.busy and not self._queue:
            self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class HttpServer:
    """Serves ``handler`` on a listening socket; ``shutdown`` drains in-flight requests."""

    def __init__(
        self,
        handler: Handler,
        error_bytes: Callable[[int, str], bytes],
        max_body_bytes: int,
        idle_seconds: float = 75.0,
    ) -> None:
        self.handler = handler
        self.error_bytes = error_bytes
        self.max_body_bytes = max_body_bytes
        self.connections: set[_Connection] = set()
        self.draining = False
        self._server: asyncio.base_events.Server | None = None
        self._idle = asyncio.Event()
        self.clock = time.monotonic
        # Idle keep-alive connections and clients that never finish a request are closed
        # after this long (checked by one sweeper, not a timer per connection).
        self.idle_seconds = idle_seconds
        self._sweeper: asyncio.Task[None] | None = None

    def new_connection(self) -> asyncio.Protocol:
        """The protocol for one accepted connection (the listening socket's factory)."""
        return _Connection(self)

    def close_expired(self) -> None:
        """Close the connections idle (or stuck in an unfinished request) for ``idle_seconds``."""
        now = self.clock()
        for connection in list(self.connections):
            if connection.expired(now, self.idle_seconds):
                connection.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.idle_seconds / 2))
            self.close_expired()

    async def start(
        self, host: str, port: int, *, reuse_port: bool = False, sock: socket.socket | None = None
    ) -> int:
        loop = asyncio.get_running_loop()
        if sock is not None:
            server = await loop.create_server(self.new_connection, sock=sock, backlog=2048)
        else:
            server = await loop.create_server(
                self.new_connection,
                host,
                port,
                backlog=2048,
                reuse_port=reuse_port,
                reuse_address=True,
            )
        self._server = server
        self._sweeper = loop.create_task(self._sweep())
        sockets = server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    def request_done(self) -> None:
        if self.draining and not any(c.busy for c in self.connections):
            self._idle.set()

    async def shutdown(self, grace_seconds: float) -> None:
        """Stop accepting, let in-flight requests (streams too) finish, then close everything."""
        self.draining = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close_if_idle()
        if any(c.busy for c in self.connections):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace_seconds)
        for connection in list(self.connections):
            connection.close()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
