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
from dataclasses import dataclass, field, replace
from typing import Protocol, cast

import httptools

__all__ = [
    "BodySink",
    "HttpServer",
    "PushedBody",
    "Request",
    "Response",
    "ServerLimits",
    "StreamResponse",
]

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
_MAX_PIPELINED = 8
# After refusing a request, what the client still sends is read and dropped for a short
# while before the socket closes: closing with unread bytes sends a reset, which can destroy
# the error answer before the client reads it.
_LINGER_SECONDS = 2.0
_HEAD_ONLY = 1
_LONGEST_METHOD = 16  # llhttp's longest, "MKCALENDAR", has 10 letters
_HTTP_1_0 = 2


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one client may cost while its request is read (defaults: gateway_image/README.md).

    ``max_line_bytes`` bounds the request line and each header line, counted as the bytes
    arrive, before the parser buffers them. The three timeouts are each at most
    ``idle_seconds``: a request that stalls longer than an idle connection may wait is not
    waited for either.
    """

    max_line_bytes: int = 8 * 1024
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    max_body_bytes: int = 8 * 1024 * 1024
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    idle_seconds: float = 75.0
    max_connections: int = 2048
    # Derived once, read per request as plain attributes (a property would cost a call).
    header_timeout: float = field(init=False, repr=False, compare=False)
    body_timeout: float = field(init=False, repr=False, compare=False)
    # How often the sweeper looks: a timeout holds to within two of these.
    sweep_seconds: float = field(init=False, repr=False, compare=False)
    max_target_bytes: int = field(init=False, repr=False, compare=False)  # with the method
    max_short_target_bytes: int = field(init=False, repr=False, compare=False)  # any method
    max_field_bytes: int = field(init=False, repr=False, compare=False)  # header name + value
    max_body_digits: int = field(init=False, repr=False, compare=False)
    # The line room of a head not counted yet: one more than a counted one can have.
    new_head_room: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("max_line_bytes", "max_header_bytes", "max_headers", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_body_bytes < 0:
            raise ValueError("max_body_bytes must not be negative")
        for name in ("header_timeout_seconds", "body_timeout_seconds", "idle_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        header_timeout = min(self.header_timeout_seconds, self.idle_seconds)
        body_timeout = min(self.body_timeout_seconds, self.idle_seconds)
        derived = {
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "sweep_seconds": min(1.0, header_timeout / 4, body_timeout / 4),
            # The parsed parts of a line, limited as the whole line would be had it come in
            # pieces: "<method> <target> HTTP/1.1\r" and "<name>: <value>\r".
            "max_target_bytes": self.max_line_bytes - len("  HTTP/1.1\r"),
            "max_short_target_bytes": self.max_line_bytes - len("  HTTP/1.1\r") - _LONGEST_METHOD,
            "max_field_bytes": self.max_line_bytes - len(": \r"),
            "max_body_digits": len(str(self.max_body_bytes)),
            "new_head_room": self.max_line_bytes + 1,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Response:
    """A whole answer, written in one piece. ``after``: work left for once it is written (a
    call's settle, its log line), so the client does not wait for it; the server runs it to
    its end even if the client leaves meanwhile, and no error of it reaches the client."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"
    after: Callable[[], Awaitable[None]] | None = None


class BodySink(Protocol):
    """Where a pushed body goes: ``send`` writes a piece to the client at once, ``end`` writes
    the last piece (maybe empty) and the end of the body."""

    def send(self, data: bytes) -> None: ...

    def end(self, data: bytes) -> None: ...


class PushedBody(Protocol):
    """A stream body that, once its first piece is out, writes the rest itself (``push``
    returns when it has ended), paused and resumed with the client's socket buffer."""

    def push(self, sink: BodySink) -> Awaitable[None]: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


@dataclass(slots=True)
class StreamResponse:
    """A chunked answer. ``chunks`` may also be a ``PushedBody``: after the first piece the
    server hands it the socket instead of stepping a coroutine per piece."""

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


_BAD_TARGET = _Rejection(400, "malformed request target")


# The status line and content type of the heads sent so far, formatted once each (a few
# statuses times a few content types; bounded anyway, an upstream chooses content types).
_STARTS: dict[tuple[int, str], bytes] = {}
_MAX_STARTS = 256


def _head(status: int, headers: list[tuple[str, str]], content_type: str, extra: bytes) -> bytes:
    start = _STARTS.get((status, content_type))
    if start is None:
        start = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\n" % (
            status,
            _REASONS.get(status, b"Status"),
            content_type.encode("latin-1"),
        )
        if len(_STARTS) < _MAX_STARTS:
            _STARTS[(status, content_type)] = start
    if not headers:
        return start + extra
    # ": ".join per pair (C, no bytecode per header) rather than an f-string each.
    text = "\r\n".join(map(": ".join, headers)) + "\r\n"
    return b"%s%s%s" % (start, text.encode("latin-1"), extra)


def _parsed_path(target: bytes) -> str | None:
    """The path of a request target that is not a plain ``/path``; None if it is malformed."""
    try:
        return httptools.parse_url(target).path.decode("latin-1")
    except httptools.HttpParserInvalidURLError:
        return None


def _is_event_stream(response: StreamResponse) -> bool:
    return response.content_type.startswith("text/event-stream")


def _last_chunks(event: bytes) -> bytes:
    """``event`` as a chunk, then the chunk that ends a chunked body."""
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event)


class _ChunkedSink:
    """A pushed body's pieces written as chunks of the client's response, dropped once the
    connection is closing (the client left, or the drain cut the stream)."""

    __slots__ = ("_transport",)

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def send(self, data: bytes) -> None:
        transport = self._transport
        if data and not transport.is_closing():
            transport.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end(self, data: bytes) -> None:
        transport = self._transport
        if not transport.is_closing():
            transport.write(_last_chunks(data) if data else b"0\r\n\r\n")


class _Connection(asyncio.Protocol):
    """One client connection; requests on it are served one after the other.

    Timeouts cost the requests nothing: the server's sweeper looks at each connection every
    ``sweep_seconds`` and drops one that stayed in the same phase too long (see
    ``check_phase``); a phase is timed from the first sweep that sees it.
    """

    # Slots: attribute reads stay fast however many there are (an instance dict's shared
    # keys stop at 30), and the callbacks read many per request.
    __slots__ = (
        "_body",
        "_body_size",
        "_closing",
        "_discard_left",
        "_discarding",
        "_finishing",
        "_header_bytes",
        "_header_count",
        "_headers",
        "_limits",
        "_line_room",
        "_max_field_bytes",
        "_max_headers",
        "_new_head_room",
        "_parser",
        "_paused",
        "_phase",
        "_phase_request",
        "_phase_since",
        "_problem",
        "_pushed",
        "_queue",
        "_reading",
        "_rejected",
        "_request_line_ended",
        "_server",
        "_stream_end",
        "_task",
        "_transport",
        "_url",
        "_wakeup",
        "_writable",
        "busy",
    )

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._limits = server.limits
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_count = 0
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        # The limits read per request or per header line, as attributes of their own.
        self._max_headers = self._limits.max_headers
        self._max_field_bytes = self._limits.max_field_bytes
        self._new_head_room = self._limits.new_head_room
        # Between two requests and inside a head, bytes are counted per line before parsing:
        # what the unfinished line at the end of what arrived so far may still take
        # (_IN_BODY while a body is read).
        self._line_room = self._new_head_room
        self._request_line_ended: dict[str, str] | None = None  # the headers of that request
        self._reading = False  # a request has begun and is not complete yet
        self._queue: deque[tuple[Request | _Rejection, bool, int]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._paused = False  # reading paused by this protocol
        self._closing = False
        self._problem: tuple[int, str] | None = None
        self._rejected = False
        self._discarding = False  # refused: what still arrives is dropped until the close
        self._discard_left = 0
        # While an event stream's head is out: the bytes that end it with a given event.
        self._stream_end: Callable[[bytes], bytes] | None = None
        self._pushed: PushedBody | None = None  # a body writing itself, told of backpressure
        self._finishing = False  # running an answer's ``after``: the client leaving waits
        self.busy = False
        # The phase as the sweeper last saw it, the request it was in (each request has a
        # headers dict of its own), and since when.
        self._phase = _WAITING
        self._phase_request = self._headers
        self._phase_since = server.clock()

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if len(self._server.connections) >= self._limits.max_connections:
            self._refuse_connection()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server.connections.add(self)

    def _refuse_connection(self) -> None:
        """Over the cap: a short 503 and a close, without reading, so the others are not slowed."""
        assert self._transport is not None
        self._server.refused_connections += 1
        self._start_discarding()
        self._transport.write(self._server.error_bytes(503, "too many connections; retry shortly"))
        self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._server.connections.discard(self)
        self._writable.set()
        task, self._task = self._task, None
        if task is not None and not task.done() and not self._finishing:
            task.cancel()
        # Nothing is parsed any more. Without these two references the connection is no
        # reference cycle (its parser holds its bound methods; its task, cancelled, holds a
        # traceback whose frame holds it): it is freed as its last reference goes, not left
        # to a full collection, which stalls every stream for as long as it walks them all.
        self._parser = _DETACHED_PARSER

    def eof_received(self) -> bool:
        # A client that half-closes has gone away: treat it as a disconnect.
        if self._task is not None and not self._task.done() and not self._finishing:
            self._task.cancel()
        return False

    def pause_writing(self) -> None:
        self._writable.clear()
        if self._pushed is not None:
            self._pushed.pause()

    def resume_writing(self) -> None:
        self._writable.set()
        if self._pushed is not None:
            self._pushed.resume()

    def data_received(self, data: bytes) -> None:
        # The head's lines are counted before the parser sees them: it buffers an unfinished
        # line whole, at a cost that grows with its length. (While discarding, every read
        # takes this branch.)
        if len(data) > self._line_room and not self._may_parse(data):
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The parser completed the upgrade request before refusing it: it is not served.
            self._queue.pop()
            self._reject(400, "protocol upgrades are not supported")
            return
        except httptools.HttpParserError as exc:
            status, message = self._problem or (400, f"malformed HTTP request: {exc}")
            self._reject(status, message)
            return
        if self._reading and self._line_room != _IN_BODY:
            self._count_unfinished_line(data)

    def _may_parse(self, data: bytes) -> bool:
        """Whether ``data`` goes to the parser: not after a refusal, nor when the line it
        continues gets too long (the others are checked when parsed, or by
        ``_count_unfinished_line``)."""
        if self._discarding:
            self._discard(data)
            return False
        newline = data.find(b"\n")
        if (len(data) if newline < 0 else newline) <= self._line_room:
            return True
        self._reject_long_line()
        return False

    def _count_unfinished_line(self, data: bytes) -> None:
        """A head goes on in the next read: count what its last line took so far."""
        limits = self._limits
        room = self._line_room
        if room == self._new_head_room:  # the head began in this read
            if self._queue:
                # Maybe after the end of another request (queued, not served yet: the task
                # runs after this read), whose body is no line: the bytes of this head are
                # not known, it is counted from the next read on.
                self._line_room = limits.max_line_bytes
                return
            room = limits.max_line_bytes
        newline = data.rfind(b"\n")
        if newline < 0:
            room -= len(data)
        else:
            room = limits.max_line_bytes - (len(data) - newline - 1)
            self._request_line_ended = self._headers
        self._line_room = room
        if room < 0:
            self._reject_long_line()  # a line longer than the limit, in one read

    def _reject_long_line(self) -> None:
        if self._reading and self._request_line_ended is self._headers:
            self._reject(431, self._headers_refused())
        else:
            self._reject(414, "request line too long")

    def _headers_refused(self) -> str:
        limits = self._limits
        return (
            f"too many or too large request headers (at most {limits.max_headers} lines of "
            f"{limits.max_line_bytes} bytes, {limits.max_header_bytes} bytes in all)"
        )

    def _start_discarding(self) -> None:
        self._discarding = True
        self._line_room = -1  # every read goes to _may_parse, which drops it

    def _discard(self, data: bytes) -> None:
        self._discard_left -= len(data)
        if self._discard_left < 0 and self._transport is not None:
            self._transport.close()

    # -- httptools callbacks ---------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._header_count = 0
        self._header_bytes = 0
        self._body = []
        self._body_size = 0
        self._reading = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_short_target_bytes:
            self._check_request_line()

    def _check_request_line(self) -> None:
        # Near the limit only: asking the parser for the method costs as much as on_url.
        if len(self._url) + len(self._parser.get_method()) > self._limits.max_target_bytes:
            self._problem = (414, "request line too long")
            raise httptools.HttpParserError(self._problem[1])

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted per line, not per name: repeated names are joined below, which would let a
        # request of many short duplicates cost quadratic time.
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        # No line can be over its limit while all of them together are not.
        if self._header_count > self._max_headers or self._header_bytes > self._max_field_bytes:
            self._check_header(len(name) + len(value))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def _check_header(self, size: int) -> None:
        limits = self._limits
        if (
            self._header_count > limits.max_headers
            or self._header_bytes > limits.max_header_bytes
            or size > limits.max_field_bytes
        ):
            self._problem = (431, self._headers_refused())
            raise httptools.HttpParserError(self._problem[1])

    def on_headers_complete(self) -> None:
        self._line_room = _IN_BODY
        length = self._headers.get("content-length")  # digits: the parser checked them
        limits = self._limits
        if (
            length is not None
            and len(length) >= limits.max_body_digits
            and int(length) > limits.max_body_bytes
        ):
            self._problem = (413, "request body too large")
            raise httptools.HttpParserError(self._problem[1])
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
        if self._body_size > self._limits.max_body_bytes:  # chunked: no length announced
            self._problem = (413, "request body too large")
            raise httptools.HttpParserError(self._problem[1])
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._line_room = self._new_head_room
        self._reading = False
        parser = self._parser
        keep_alive = parser.should_keep_alive()
        headers = self._headers
        # Only an HTTP/1.0 request can lack keep-alive or name a connection option it needs;
        # asking the parser for the version costs more than the rest of this callback.
        if keep_alive and "connection" not in headers:
            flags = 0
        else:
            flags = _HTTP_1_0 if parser.get_http_version() == "1.0" else 0
        url = self._url
        # The common plain /path inline, without a call or a full URL parse. (``find``, not
        # ``in``: ``bytes.__contains__`` first tries its argument as an int and formats the
        # TypeError, about 1,800 instructions each.)
        if url[:1] == b"/" and url.find(b"?") < 0 and url.find(b"#") < 0:
            path: str | None = url.decode("latin-1")
        else:
            path = _parsed_path(url)
        if path is None:
            self._queue.append((_BAD_TARGET, False, 0))
        else:
            method = parser.get_method().decode("latin-1")
            if method == "HEAD":
                method = "GET"  # answered as GET, without the body
                flags |= _HEAD_ONLY
            request = Request(method, path, headers, b"".join(self._body))
            self._queue.append((request, keep_alive, flags))
        self._body = []
        if len(self._queue) > _MAX_PIPELINED and self._transport is not None:
            self._pause_reading()  # resumed once the queue is served
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
            self._queue.append((_Rejection(status, message), False, 0))
            self._pause_reading()
            return
        self._refuse(transport, _Rejection(status, message))

    def _refuse(self, transport: asyncio.Transport, rejection: _Rejection) -> None:
        """Answer ``rejection`` and close after a short linger; a drop closes at once."""
        if not rejection.status:
            transport.close()
            return
        transport.write(self._server.error_bytes(rejection.status, rejection.message))
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._start_discarding()
        self._discard_left = max(self._limits.max_body_bytes, 1 << 20)
        if self._paused:
            self._resume_reading()

    # Our own flag rather than the transport's is_reading(): one call less per request.
    def _pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()
            self._paused = True

    def _resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()
            self._paused = False

    def check_phase(self, now: float) -> None:
        """The sweeper's look: time out a phase (waiting for a request, reading its head or its
        body, lingering after a refusal) that lasted too long; serving one has no limit."""
        limits = self._limits
        if self._discarding:
            phase, limit = _LINGERING, _LINGER_SECONDS
        elif self._reading:
            if self._line_room != _IN_BODY:
                phase, limit = _HEAD, limits.header_timeout
            else:
                phase, limit = _BODY, limits.body_timeout
        elif self.busy or self._queue:
            phase, limit = _SERVING, _NEVER
        elif self._task is not None:  # started with the first request
            phase, limit = _WAITING, limits.idle_seconds
        else:
            phase, limit = _WAITING, limits.header_timeout  # the first request: sent at once
        if phase != self._phase or self._headers is not self._phase_request:
            self._phase, self._phase_request, self._phase_since = phase, self._headers, now
        elif now - self._phase_since >= limit:
            self._phase_since = now
            self.time_out()

    def time_out(self) -> None:
        """Drop the connection, after the answers it is still owed."""
        transport = self._transport
        if transport is None:
            return
        if self._discarding or not (self.busy or self._queue):
            transport.close()
            return
        if not self._rejected:
            self._rejected = True
            self._queue.append((_DROP, False, 0))
            self._pause_reading()

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
            request, keep_alive, flags = self._queue.popleft()
            if self._paused and not self._queue:
                self._resume_reading()
            if isinstance(request, _Rejection):
                self._refuse(transport, request)
                return
            self.busy = True
            try:
                response = await self._server.handler(request)
                keep_alive = keep_alive and self._server.keep_alive and not self._server.draining
                try:
                    keep_alive = await self._write(transport, request, response, keep_alive, flags)
                finally:
                    # Inline, not a coroutine of its own: one frame less per whole stream.
                    after = response.after if isinstance(response, Response) else None
                    if after is not None:
                        # To its end even if the client leaves (a settle cut halfway would
                        # lose what the call cost); its errors are logged, counted and kept
                        # from the client, who has its answer.
                        self._finishing = True
                        try:
                            await after()
                        except Exception:
                            _log.exception("unhandled error after an answer was written")
                            self._server.on_internal_error("after_answer")
                        finally:
                            self._finishing = False
            except asyncio.CancelledError:
                transport.close()
                raise
            except Exception:
                _log.exception("unhandled error serving %s %s", request.method, request.path)
                self._server.on_internal_error("handler")
                transport.write(self._server.error_bytes(500, "internal gateway error"))
                keep_alive = False
            finally:
                self.busy = False
                if self._server.draining:
                    self._server.request_done()
            if not keep_alive:
                transport.close()
                return

    async def _write(
        self,
        transport: asyncio.Transport,
        request: Request,
        response: Response | StreamResponse,
        keep_alive: bool,
        flags: int,
    ) -> bool:
        """Write ``response``; whether the connection may serve another request after it."""
        if flags:
            return await self._write_head_only_or_1_0(
                transport, request, response, keep_alive, flags
            )
        connection = b"" if keep_alive else _CLOSE
        headers = response.headers
        if response.status == 405:
            headers = self._server.with_allow(request.path, headers)
        if isinstance(response, Response):
            extra = b"content-length: %d\r\n%s\r\n" % (len(response.body), connection)
            transport.write(
                _head(response.status, headers, response.content_type, extra) + response.body
            )
            return keep_alive
        # Chunked, inline rather than in a coroutine of its own: one less per stream.
        # The head goes out with the first chunk, and the terminating chunk with the last one
        # when the body says it is exhausted: one write per stream in the common case.
        pending = _head(
            response.status,
            headers,
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
                if pending:
                    transport.write(pending + frame)
                    pending = b""
                    if response.content_type.startswith("text/event-stream"):  # inline
                        self._stream_end = _last_chunks
                else:
                    transport.write(frame)
                if finished:
                    break
                if not self._writable.is_set():
                    await self._writable.wait()
                push = getattr(chunks, "push", None)
                if push is not None:  # the rest goes out from the body's own callbacks
                    self._pushed = cast(PushedBody, chunks)
                    try:
                        await push(_ChunkedSink(transport))
                    finally:
                        self._pushed = None
                    finished = True
                    break
        except Exception:
            if pending:
                raise  # nothing sent yet: the caller answers with an error
            _log.exception("stream broke off after its head was sent")
            self._server.on_internal_error("stream")
            transport.close()
            return False
        finally:
            self._stream_end = None
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if not finished:
            transport.write(pending + b"0\r\n\r\n")
        return keep_alive

    async def _write_head_only_or_1_0(
        self,
        transport: asyncio.Transport,
        request: Request,
        response: Response | StreamResponse,
        keep_alive: bool,
        flags: int,
    ) -> bool:
        """A HEAD request's answer (no body) or an HTTP/1.0 client's (no chunked framing)."""
        if flags & _HTTP_1_0:
            connection = b"connection: keep-alive\r\n" if keep_alive else _CLOSE
        else:
            connection = b"" if keep_alive else _CLOSE
        headers = response.headers
        if response.status == 405:
            headers = self._server.with_allow(request.path, headers)
        if isinstance(response, Response):
            extra = b"content-length: %d\r\n%s\r\n" % (len(response.body), connection)
            head = _head(response.status, headers, response.content_type, extra)
            transport.write(head if flags & _HEAD_ONLY else head + response.body)
            return keep_alive
        if flags & _HEAD_ONLY:
            await self._write_stream_head(transport, response, headers, connection, flags)
            return keep_alive
        await self._write_until_close(transport, response, headers)
        return False

    async def _write_stream_head(
        self,
        transport: asyncio.Transport,
        response: StreamResponse,
        headers: list[tuple[str, str]],
        connection: bytes,
        flags: int,
    ) -> None:
        """A HEAD request's answer: the head GET would get, the body closed unread."""
        framing = b"" if flags & _HTTP_1_0 else b"transfer-encoding: chunked\r\n"
        extra = b"%scache-control: no-cache\r\n%s\r\n" % (framing, connection)
        transport.write(_head(response.status, headers, response.content_type, extra))
        await _close_body(response.chunks)

    async def _write_until_close(
        self, transport: asyncio.Transport, response: StreamResponse, headers: list[tuple[str, str]]
    ) -> None:
        """HTTP/1.0 has no chunked framing: the body is written as is and ends with the close."""
        pending = _head(
            response.status,
            headers,
            response.content_type,
            b"cache-control: no-cache\r\nconnection: close\r\n\r\n",
        )
        chunks = response.chunks
        try:
            async for chunk in chunks:
                if self._closing:
                    raise asyncio.CancelledError
                if pending and _is_event_stream(response):
                    self._stream_end = bytes
                transport.write(pending + chunk if pending else chunk)
                pending = b""
                if not self._writable.is_set():
                    await self._writable.wait()
        except Exception:
            if pending:
                raise
            _log.exception("stream broke off after its head was sent")
            self._server.on_internal_error("stream")
        finally:
            self._stream_end = None
            await _close_body(chunks)
        if pending:
            transport.write(pending)

    def close_if_idle(self) -> None:
        if not self.busy and not self._queue:
            self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def cut(self, event: bytes | None) -> None:
        """Close now; an event stream whose head is out first gets ``event`` and its end, so
        the client reads why it was cut rather than a bare end of file."""
        transport, end = self._transport, self._stream_end
        if event is not None and end is not None and transport and not transport.is_closing():
            transport.write(end(event))
        self.close()


class _NoCallbacks:
    """The protocol of ``_DETACHED_PARSER``: it is told of nothing."""

    __slots__ = ()


# What a closed connection's parser is swapped for (nothing feeds it).
_DETACHED_PARSER = httptools.HttpRequestParser(_NoCallbacks())
_NEVER = float("inf")
_IN_BODY = 1 << 62  # a line room no read reaches
_CLOSE = b"connection: close\r\n"
_WAITING, _HEAD, _BODY, _SERVING, _LINGERING = range(5)
_DROP = _Rejection(0, "")  # a request that timed out while earlier ones were served


async def _close_body(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


class HttpServer:
    """Serves ``handler`` on a listening socket; ``shutdown`` drains in-flight requests.

    ``max_body_bytes`` and ``idle_seconds``, when given, override those of ``limits``.
    ``allowed_methods`` (path -> methods) is how the app says what a path accepts: its 405
    answers then carry an ``Allow`` header (HEAD is allowed wherever GET is).
    """

    def __init__(
        self,
        handler: Handler,
        error_bytes: Callable[[int, str], bytes],
        max_body_bytes: int | None = None,
        idle_seconds: float | None = None,
        *,
        limits: ServerLimits | None = None,
    ) -> None:
        limits = limits or ServerLimits()
        if max_body_bytes is not None:
            limits = replace(limits, max_body_bytes=max_body_bytes)
        if idle_seconds is not None:
            limits = replace(limits, idle_seconds=idle_seconds)
        self.limits = limits
        self.handler = handler
        self.error_bytes = error_bytes
        self.allowed_methods: dict[str, tuple[str, ...]] = {}
        # Told of every answer the gateway broke itself ("handler": a 500; "stream": a stream
        # cut by an exception): the app counts them, and each is a bug.
        self.on_internal_error: Callable[[str], None] = lambda where: None
        self.connections: set[_Connection] = set()
        self.refused_connections = 0
        self.draining = False
        # False once the server is stopping: answers close their connection.
        self.keep_alive = True
        self._server: asyncio.base_events.Server | None = None
        self._idle = asyncio.Event()
        self.clock = time.monotonic
        # Deadlines are checked by one sweeper, not a timer per connection.
        self._sweeper: asyncio.Task[None] | None = None

    def new_connection(self) -> asyncio.Protocol:
        """The protocol for one accepted connection (the listening socket's factory)."""
        return _Connection(self)

    def with_allow(self, path: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """``headers`` of a 405 for ``path``, with the ``Allow`` header the app's table gives."""
        methods = self.allowed_methods.get(path)
        if not methods or any(name.lower() == "allow" for name, _ in headers):
            return headers
        if "GET" in methods and "HEAD" not in methods:
            methods = (*methods, "HEAD")
        return [*headers, ("allow", ", ".join(methods))]

    def close_expired(self) -> None:
        """Drop the connections idle, or stalled in a request, for too long."""
        now = self.clock()
        for connection in list(self.connections):
            connection.check_phase(now)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.limits.sweep_seconds)
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

    async def shutdown(self, grace_seconds: float, cut_stream_with: bytes | None = None) -> None:
        """Stop accepting, let in-flight requests (streams too) finish, then close everything;
        an event stream still open then ends with ``cut_stream_with`` (an SSE event)."""
        self.draining = True
        self.keep_alive = False
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
            connection.cut(cut_stream_with)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
