"""The gateway's HTTP/1.1 server, byte for byte: requests are fed to one connection's protocol
through a fake transport, and the bytes it writes back are compared whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.protocol import FakeTransport, connect, eventually, request_bytes
from tiergate_gateway.server import HttpServer, Request, Response, ServerLimits, StreamResponse

MAX_BODY = 1024


def error_bytes(status: int, message: str) -> bytes:
    return b"ERROR %d %s\n" % (status, message.encode())


def ok(body: bytes, extra: bytes = b"") -> bytes:
    """The exact bytes of a 200 text/plain answer from ``App``."""
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


CLOSE = b"connection: close\r\n"


class App:
    """Answers ``<method> <path> <body>``; a path in ``held`` waits until released."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.held: dict[str, asyncio.Event] = {}
        self.cancelled: list[str] = []
        self.stream: StreamResponse | None = None

    def hold(self, path: str) -> asyncio.Event:
        self.held[path] = asyncio.Event()
        return self.held[path]

    async def __call__(self, request: Request) -> Response | StreamResponse:
        self.seen.append(request)
        try:
            if request.path in self.held:
                await self.held[request.path].wait()
        except asyncio.CancelledError:
            self.cancelled.append(request.path)
            raise
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        if request.path == "/stream" and self.stream is not None:
            return self.stream
        body = f"{request.method} {request.path} ".encode() + request.body
        return Response(200, body, content_type="text/plain")


def open_connection(
    app: App, *, max_body: int = MAX_BODY, idle_seconds: float = 75.0
) -> tuple[HttpServer, FakeTransport]:
    server = HttpServer(app, error_bytes, max_body, idle_seconds)
    return server, connect(server.new_connection())


async def settle() -> None:
    """A few loop turns: enough for a handler that does not wait to answer."""
    for _ in range(10):
        await asyncio.sleep(0)


# --- one request, keep-alive, close ------------------------------------------------------


async def test_a_request_is_answered_with_exact_bytes_and_the_connection_stays_open() -> None:
    app = App()
    _, transport = open_connection(app)
    transport.feed(request_bytes("GET", "/healthz", [("X-Thing", "a"), ("x-thing", "b")]))
    await eventually(lambda: bool(transport.written))
    assert transport.take() == ok(b"GET /healthz ")
    assert transport.writes == 1
    assert not transport.closed
    assert app.seen == [Request("GET", "/healthz", {"host": "gateway", "x-thing": "a, b"}, b"")]


async def test_a_query_string_is_not_part_of_the_path_and_the_body_is_whole() -> None:
    app = App()
    _, transport = open_connection(app)
    transport.feed(request_bytes("POST", "/v1/chat?x=1#f", body=b'{"a": 1}'))
    await eventually(lambda: bool(transport.written))
    assert transport.take() == ok(b'POST /v1/chat {"a": 1}')


async def test_keep_alive_serves_the_next_request_on_the_same_connection() -> None:
    app = App()
    _, transport = open_connection(app)
    for path in ("/one", "/two", "/three"):
        transport.feed(request_bytes("GET", path))
        await eventually(lambda: bool(transport.written))
        assert transport.take() == ok(f"GET {path} ".encode())
    assert not transport.closed
    assert transport.writes == 3


async def test_connection_close_is_answered_then_closed_and_later_requests_are_dropped() -> None:
    app = App()
    _, transport = open_connection(app)
    transport.feed(
        request_bytes("GET", "/last", [("connection", "close")]) + request_bytes("GET", "/never")
    )
    await eventually(lambda: transport.lost)
    assert transport.take() == ok(b"GET /last ", CLOSE)
    assert [r.path for r in app.seen] == ["/last"]


async def test_a_draining_server_answers_with_connection_close() -> None:
    app = App()
    server, transport = open_connection(app)
    server.draining = True
    transport.feed(request_bytes("GET", "/x"))
    await eventually(lambda: transport.lost)
    assert transport.take() == ok(b"GET /x ", CLOSE)


# --- pipelining and split chunks -----------------------------------------------------------


async def test_pipelined_requests_are_answered_in_order_one_at_a_time() -> None:
    app = App()
    release_first = app.hold("/slow")
    _, transport = open_connection(app)
    transport.feed(
        request_bytes("GET", "/slow")
        + request_bytes("POST", "/fast", body=b"b")
        + request_bytes("GET", "/third")
    )
    await settle()
    assert transport.written == b""  # the second one waits for the first
    assert [r.path for r in app.seen] == ["/slow"]
    release_first.set()
    await eventually(lambda: len(app.seen) == 3 and transport.writes == 3)
    assert transport.take() == ok(b"GET /slow ") + ok(b"POST /fast b") + ok(b"GET /third ")
    assert not transport.closed


PIPELINE = (
    request_bytes("POST", "/v1/a?q=1", [("content-type", "application/json")], body=b'{"x":1}')
    + b"POST /v1/b HTTP/1.1\r\nhost: gateway\r\ntransfer-encoding: chunked\r\n\r\n"
    + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    + request_bytes("GET", "/" + "p" * 300, [("x-long", "v" * 500)])
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
async def test_requests_split_into_small_pieces_parse_as_when_whole(size: int) -> None:
    whole_app, split_app = App(), App()
    _, whole = open_connection(whole_app)
    _, split = open_connection(split_app)
    whole.feed(PIPELINE)
    split.feed_in_pieces(PIPELINE, size)  # pieces end inside names, values, CRLFs and the body
    await eventually(lambda: whole.writes == 3 and split.writes == 3)
    assert split.take() == whole.take()
    assert split_app.seen == whole_app.seen
    assert split_app.seen[1] == Request(
        "POST", "/v1/b", {"host": "gateway", "transfer-encoding": "chunked"}, b"abcde"
    )


async def test_more_than_eight_queued_requests_pause_reading_until_served() -> None:
    app = App()
    release = app.hold("/first")
    _, transport = open_connection(app)
    transport.feed(b"".join(request_bytes("GET", p) for p in ["/first"] + ["/n"] * 9))
    await settle()
    assert not transport.reading and transport.paused_times == 1
    release.set()
    await eventually(lambda: transport.writes == 10)
    assert transport.reading
    assert transport.take() == ok(b"GET /first ") + ok(b"GET /n ") * 9


# --- limits ---------------------------------------------------------------------------------


class CountingParser:
    """Wraps a connection's parser to count the bytes it is fed."""

    def __init__(self, parser: Any) -> None:
        self._parser = parser
        self.fed = 0

    def feed_data(self, data: bytes) -> None:
        self.fed += len(data)
        self._parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


def open_limited(app: App, **limits: Any) -> tuple[HttpServer, FakeTransport, CountingParser]:
    """A connection with small ``limits``, its parser wrapped to count what it is fed."""
    server = HttpServer(app, error_bytes, limits=ServerLimits(**limits))
    protocol = server.new_connection()
    parser = CountingParser(protocol._parser)  # type: ignore[attr-defined]
    protocol._parser = parser  # type: ignore[attr-defined]
    return server, connect(protocol), parser


async def test_a_body_at_the_limit_is_served() -> None:
    app = App()
    _, transport = open_connection(app)
    transport.feed(request_bytes("POST", "/b", body=b"x" * MAX_BODY))
    await eventually(lambda: bool(transport.written))
    assert transport.take() == ok(b"POST /b " + b"x" * MAX_BODY)


async def test_a_content_length_over_the_limit_is_refused_at_the_head_with_413() -> None:
    app = App()
    _, transport = open_connection(app)
    transport.feed(b"POST /b HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % (MAX_BODY + 1))
    assert transport.take() == error_bytes(413, "request body too large")  # before any body
    assert transport.eof_written and not transport.closed  # lingers to read what is in flight
    transport.feed(b"x" * (MAX_BODY + 1))  # dropped unparsed
    transport.peer_eof()
    await eventually(lambda: transport.lost)
    assert transport.written == b"" and app.seen == []


async def test_a_content_length_over_the_limit_is_refused_instead_of_100_continue() -> None:
    app = App()
    _, transport = open_connection(app)
    transport.feed(
        b"POST /b HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: %d\r\n\r\n" % (MAX_BODY + 1)
    )
    assert transport.take() == error_bytes(413, "request body too large")


async def test_a_chunked_body_is_refused_with_413_as_soon_as_it_passes_the_limit() -> None:
    app = App()
    _, transport = open_connection(app)
    transport.feed(
        b"POST /b HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (MAX_BODY, b"x" * MAX_BODY)
        + b"1\r\ny\r\n"
    )
    assert transport.take() == error_bytes(413, "request body too large")
    assert transport.eof_written and app.seen == []


async def test_a_refused_client_is_closed_after_the_linger_or_what_it_may_send() -> None:
    server, clock, _ = clocked(ServerLimits(max_body_bytes=1 << 20))
    by_time, by_bytes = (connect(server.new_connection()) for _ in range(2))
    for transport in (by_time, by_bytes):
        transport.feed(b"POST /b HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % (2 << 20))
        assert transport.eof_written and not transport.closed
    by_bytes.feed(b"x" * (1 << 20))
    assert not by_bytes.closed
    by_bytes.feed(b"x")
    assert by_bytes.closed  # the client may send no more than the body limit meanwhile
    clock.run(2.0)
    assert not by_time.closed
    clock.run(1.0)
    assert by_time.closed


async def test_a_request_line_of_the_limit_is_served_one_more_byte_is_414() -> None:
    app = App()
    line = "/" + "a" * (8192 - len("GET  HTTP/1.1\r") - 1)  # the CR counts, the LF does not
    _, transport = open_connection(app)
    transport.feed(request_bytes("GET", line))
    await eventually(lambda: bool(transport.written))
    assert transport.take().startswith(b"HTTP/1.1 200 OK\r\n")

    for pieces in (1000, 100_000):
        _, refused = open_connection(app)
        refused.feed_in_pieces(request_bytes("GET", line + "a"), pieces)
        assert refused.take() == error_bytes(414, "request line too long")
        assert refused.eof_written


HEADERS_REFUSED = error_bytes(
    431,
    "too many or too large request headers (at most 100 lines of 8192 bytes, 65536 bytes in all)",
)


async def test_one_hundred_header_lines_are_served_one_more_is_431() -> None:
    app = App()
    _, transport = open_connection(app)
    transport.feed(request_bytes("GET", "/h", [(f"x-{i}", "v") for i in range(99)]))  # + host
    await eventually(lambda: bool(transport.written))
    assert transport.take() == ok(b"GET /h ")
    assert len(app.seen[0].headers) == 100

    _, refused = open_connection(app)
    refused.feed(request_bytes("GET", "/h", [(f"x-{i}", "v") for i in range(100)]))
    assert refused.take() == HEADERS_REFUSED


async def test_repeated_header_names_count_as_separate_lines() -> None:
    # Counting names let 30,000 "a: b" lines through, each joined to the last: 0.25 s of CPU.
    app = App()
    _, transport = open_connection(app)
    transport.feed(request_bytes("GET", "/h", [("a", "b")] * 30_000))
    assert transport.take() == HEADERS_REFUSED
    assert app.seen == []


async def test_header_bytes_are_limited_to_64_kib_in_all() -> None:
    app = App()
    _, transport = open_connection(app)
    # name + value of all lines: "host" + "gateway" + 9 x ("x-i" + value)
    value = 8 * 1024 - len("x-i: \r")  # each line at the 8 KiB line limit
    fits = [(f"x-{i}", "v" * value) for i in range(8)]
    last = 64 * 1024 - len("hostgateway") - sum(3 + value for _ in fits) - 3
    transport.feed(request_bytes("GET", "/h", [*fits, ("x-8", "v" * last)]))
    await eventually(lambda: bool(transport.written))
    assert transport.take().startswith(b"HTTP/1.1 200 OK\r\n")

    _, refused = open_connection(app)
    refused.feed_in_pieces(request_bytes("GET", "/h", [*fits, ("x-8", "v" * (last + 1))]), 4096)
    assert refused.take() == HEADERS_REFUSED


@pytest.mark.parametrize("pieces", [1, 100, 8191, 1 << 16])
async def test_a_header_line_over_the_limit_is_refused_before_the_parser_buffers_it(
    pieces: int,
) -> None:
    # A 64 MiB line used to be buffered whole by the parser: +123 MB and 5.6 s of CPU.
    app = App()
    _, transport, parser = open_limited(app, max_line_bytes=1024, max_header_bytes=4096)
    huge = b"GET / HTTP/1.1\r\nx-huge: " + b"v" * (1 << 20)
    transport.feed_in_pieces(huge[: 1 << 17], pieces)
    assert transport.take() == error_bytes(
        431,
        "too many or too large request headers (at most 100 lines of 1024 bytes, 4096 bytes in all)",
    )
    # What reached the parser: the request line, then the header line up to the limit
    # (or, with a long line arriving in one piece, that one piece).
    assert parser.fed <= len("GET / HTTP/1.1\r\n") + max(1024, pieces)


async def test_a_line_split_over_pieces_is_counted_across_them() -> None:
    app = App()
    _, transport, parser = open_limited(app, max_line_bytes=64)
    transport.feed(b"GET / HTTP/1.1\r\nx-a: " + b"v" * 40)
    transport.feed(b"v" * 20 + b"\r\n")  # 66 bytes with the CR: one too many
    assert transport.take().startswith(b"ERROR 431 ")
    assert parser.fed == len(b"GET / HTTP/1.1\r\nx-a: ") + 40


async def test_a_line_limit_counts_each_line_of_a_pipelined_request_afresh() -> None:
    app = App()
    _, transport, _ = open_limited(app, max_line_bytes=64)
    one = request_bytes("GET", "/" + "a" * 40, [("x-a", "v" * 50)])
    transport.feed_in_pieces(one * 3, 7)
    await eventually(lambda: transport.writes == 3)
    assert not transport.finished


async def test_a_long_body_line_before_a_split_pipelined_head_is_no_head_line() -> None:
    app = App()
    _, transport, _ = open_limited(app, max_line_bytes=64, max_body_bytes=4096)
    body = b"x" * 1000  # no newline: it would be one long line if counted as head
    second = request_bytes("GET", "/second")
    transport.feed(request_bytes("POST", "/first", body=body) + second[:10])
    transport.feed(second[10:])
    await eventually(lambda: transport.writes == 2)
    assert transport.take() == ok(b"POST /first " + body) + ok(b"GET /second ")


async def test_a_malformed_request_is_answered_400_and_closed() -> None:
    app = App()
    _, transport = open_connection(app)
    transport.feed(b"NOT HTTP AT ALL\r\n\r\n")
    written = transport.take()
    assert written.startswith(b"ERROR 400 malformed HTTP request: ")
    assert transport.eof_written and app.seen == []
    transport.peer_eof()
    await eventually(lambda: transport.lost)


async def test_a_malformed_request_after_a_valid_one_is_answered_after_it() -> None:
    # Both arrive in one read: the error used to go out first, the valid one never answered.
    app = App()
    _, transport = open_connection(app)
    transport.feed(request_bytes("GET", "/fine") + b"GARBAGE\r\n\r\n")
    await eventually(lambda: transport.finished)
    answer = ok(b"GET /fine ")
    written = transport.take()
    assert written[: len(answer)] == answer
    assert written[len(answer) :].startswith(b"ERROR 400 malformed HTTP request: ")


async def test_a_malformed_request_during_a_slow_answer_waits_for_it() -> None:
    app = App()
    release = app.hold("/slow")
    _, transport = open_connection(app)
    transport.feed(request_bytes("GET", "/slow"))
    await settle()
    transport.feed(b"GET / HTTP/1.1\r\nbad header\r\n\r\n")
    transport.feed(b"more garbage\r\n")
    await settle()
    assert not transport.finished and app.cancelled == []
    release.set()
    await eventually(lambda: transport.finished)
    written = transport.take()
    assert written.startswith(ok(b"GET /slow "))
    assert written.count(b"ERROR 400") == 1


async def test_a_protocol_upgrade_is_refused_400_without_calling_the_handler() -> None:
    app = App()
    _, transport = open_connection(app)
    transport.feed(
        request_bytes("GET", "/ws", [("connection", "upgrade"), ("upgrade", "websocket")])
    )
    await eventually(lambda: transport.finished)
    assert transport.take() == error_bytes(400, "protocol upgrades are not supported")
    assert app.seen == []


# --- connections and timeouts ----------------------------------------------------------------


async def test_a_connection_over_the_cap_is_refused_at_once_with_503() -> None:
    app = App()
    server = HttpServer(app, error_bytes, limits=ServerLimits(max_connections=2))
    first, second = (connect(server.new_connection()) for _ in range(2))
    refused = connect(server.new_connection())
    assert refused.take() == error_bytes(503, "too many connections; retry shortly")
    assert refused.closed and server.refused_connections == 1
    refused.protocol.data_received(request_bytes("GET", "/late"))  # already in flight: dropped
    await settle()
    assert app.seen == [] and len(server.connections) == 2
    first.peer_reset()
    again = connect(server.new_connection())
    again.feed(request_bytes("GET", "/now"))
    await eventually(lambda: bool(again.written))
    assert again.take() == ok(b"GET /now ")
    assert not second.closed


class Clock:
    """The server's clock, moved by the test; ``run`` also plays the sweeper's ticks."""

    def __init__(self, server: HttpServer) -> None:
        self.now = 1000.0
        self._server = server
        self._next_sweep = self.now + server.limits.sweep_seconds
        server.clock = lambda: self.now

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self._next_sweep <= end + 1e-9:
            self.now = self._next_sweep
            self._server.close_expired()
            self._next_sweep += self._server.limits.sweep_seconds
        self.now = end


def clocked(limits: ServerLimits) -> tuple[HttpServer, Clock, App]:
    app = App()
    server = HttpServer(app, error_bytes, limits=limits)
    return server, Clock(server), app


# A phase is timed from the first sweep that sees it, and timed out at the first sweep after
# its limit: up to two sweeps (2 x 1 s by default, 2 x 0.25 s here) past the limit.


async def test_a_head_not_complete_within_the_header_timeout_is_dropped() -> None:
    limits = ServerLimits(header_timeout_seconds=1, body_timeout_seconds=1)
    server, clock, _ = clocked(limits)
    silent, slow = (connect(server.new_connection()) for _ in range(2))
    clock.run(0.5)
    slow.feed(b"GET / HTTP/1.1\r\n")
    for _ in range(9):  # a byte every 0.1 s keeps no connection alive
        clock.run(0.1)
        slow.feed(b"x")
    assert not slow.closed and silent.closed  # a connection that sends nothing: 1 s too
    clock.run(0.6)
    assert slow.closed and slow.written == b""


async def test_a_body_not_complete_within_the_body_timeout_is_dropped() -> None:
    server, clock, app = clocked(ServerLimits(header_timeout_seconds=1, body_timeout_seconds=2))
    transport = connect(server.new_connection())
    transport.feed(b"POST /b HTTP/1.1\r\ncontent-length: 10\r\n\r\n")
    for _ in range(9):
        clock.run(0.2)
        transport.feed(b"1")
    assert not transport.closed
    clock.run(0.5)
    assert transport.closed and transport.written == b"" and app.seen == []


async def test_the_timeouts_are_at_most_idle_seconds() -> None:
    limits = ServerLimits(header_timeout_seconds=10, body_timeout_seconds=30, idle_seconds=0.3)
    assert (limits.header_timeout, limits.body_timeout, limits.sweep_seconds) == (0.3, 0.3, 0.075)
    assert ServerLimits().sweep_seconds == 1.0


async def test_a_stalled_pipelined_request_is_dropped_after_the_answer_in_progress() -> None:
    server, clock, app = clocked(ServerLimits(header_timeout_seconds=1))
    release = app.hold("/slow")
    transport = connect(server.new_connection())
    transport.feed(request_bytes("GET", "/slow") + b"GET /next HTTP/1.1\r\n")
    await settle()
    clock.run(2)
    assert not transport.closed and app.cancelled == []
    release.set()
    await eventually(lambda: transport.finished)
    assert transport.take() == ok(b"GET /slow ")


async def test_idle_connections_close_after_idle_seconds_busy_ones_do_not() -> None:
    server, clock, app = clocked(ServerLimits(idle_seconds=75.0))
    app.hold("/slow")
    idle, busy = (connect(server.new_connection()) for _ in range(2))
    idle.feed(request_bytes("GET", "/done"))
    busy.feed(request_bytes("GET", "/slow"))
    await eventually(lambda: idle.writes == 1 and len(app.seen) == 2)

    clock.run(75.0)
    assert not idle.closed  # not longer than idle_seconds yet
    clock.run(2.0)
    assert idle.closed and not busy.closed


async def test_the_idle_time_starts_when_an_answer_is_written_not_when_its_request_came() -> None:
    server, clock, app = clocked(ServerLimits(idle_seconds=75.0))
    release = app.hold("/slow")
    transport = connect(server.new_connection())
    transport.feed(request_bytes("GET", "/slow"))
    await settle()
    clock.run(100)
    release.set()
    await eventually(lambda: transport.writes == 1)
    clock.run(74)
    assert not transport.closed


async def test_a_client_sending_requests_one_after_the_other_is_never_timed_out() -> None:
    server, clock, app = clocked(ServerLimits(header_timeout_seconds=1, idle_seconds=2))
    transport = connect(server.new_connection())
    for _ in range(20):  # each sweep sees a head, but never the same one twice
        transport.feed(request_bytes("GET", "/x")[:-2])
        clock.run(0.5)
        transport.feed(b"\r\n")
        await eventually(lambda: transport.writes == len(app.seen))
    assert not transport.closed


# --- Expect: 100-continue --------------------------------------------------------------------


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    app = App()
    _, transport = open_connection(app)
    head = b"POST /e HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n"
    transport.feed(head)
    assert transport.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    transport.feed(b"hi")
    await eventually(lambda: bool(transport.written))
    assert transport.take() == ok(b"POST /e hi")


async def test_expect_100_continue_is_not_written_into_an_earlier_streamed_answer() -> None:
    app = App()
    more = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"one"
        await more.wait()
        yield b"two"

    app.stream = StreamResponse(200, chunks())
    _, transport = open_connection(app)
    transport.feed(request_bytes("GET", "/stream"))
    await eventually(lambda: bool(transport.written))
    transport.feed(b"POST /e HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
    more.set()
    transport.feed(b"hi")
    await eventually(lambda: len(app.seen) == 2 and transport.writes == 4)
    assert transport.take() == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
        b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n" + ok(b"POST /e hi")
    )


# --- streamed answers ------------------------------------------------------------------------

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-a: 1\r\n"
    b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
)


async def test_a_stream_is_chunk_framed_with_its_head_in_the_first_write() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b"data: 1\n\n", b"", b"data: 2\n\n"):
            yield chunk

    app = App()
    app.stream = StreamResponse(200, chunks(), [("x-a", "1")])
    _, transport = open_connection(app)
    transport.feed(request_bytes("GET", "/stream"))
    await eventually(lambda: transport.writes == 3)
    assert transport.take() == STREAM_HEAD + b"9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"
    assert not transport.closed


class _Exhausting:
    """A body that says when its next item would be the end, as the gateway's relay does."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks
        self.closed = False

    @property
    def exhausted(self) -> bool:
        return not self._chunks

    def __aiter__(self) -> _Exhausting:
        return self

    async def __anext__(self) -> bytes:
        if not self._chunks:
            raise StopAsyncIteration
        return self._chunks.pop(0)

    async def aclose(self) -> None:
        self.closed = True


async def test_a_stream_that_knows_its_end_goes_out_in_one_write_and_is_closed() -> None:
    body = _Exhausting([b"all of it"])
    app = App()
    app.stream = StreamResponse(200, body, [("x-a", "1")])
    _, transport = open_connection(app)
    transport.feed(request_bytes("GET", "/stream"))
    await eventually(lambda: body.closed)
    assert transport.take() == STREAM_HEAD + b"9\r\nall of it\r\n0\r\n\r\n"
    assert transport.writes == 1


async def test_a_stream_breaking_after_its_head_closes_without_the_last_chunk() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"part"
        raise RuntimeError("upstream went away")

    app = App()
    app.stream = StreamResponse(200, chunks(), [("x-a", "1")])
    _, transport = open_connection(app)
    transport.feed(request_bytes("GET", "/stream"))
    await eventually(lambda: transport.lost)
    assert transport.take() == STREAM_HEAD + b"4\r\npart\r\n"  # no terminating chunk


async def test_a_stream_waits_while_the_transport_is_paused() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b"a", b"b"):
            yield chunk

    app = App()
    app.stream = StreamResponse(200, chunks(), [("x-a", "1")])
    _, transport = open_connection(app)
    transport.protocol.pause_writing()
    transport.feed(request_bytes("GET", "/stream"))
    await eventually(lambda: transport.writes == 1)
    await settle()
    assert transport.take() == STREAM_HEAD + b"1\r\na\r\n"
    transport.protocol.resume_writing()
    await eventually(lambda: transport.writes == 3)
    assert transport.take() == b"1\r\nb\r\n0\r\n\r\n"


async def test_a_stream_failing_before_its_first_chunk_is_a_500() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        raise RuntimeError("nothing to send")
        yield b""  # pragma: no cover

    app = App()
    app.stream = StreamResponse(200, chunks())
    _, transport = open_connection(app)
    transport.feed(request_bytes("GET", "/stream"))
    await eventually(lambda: transport.lost)
    assert transport.take() == error_bytes(500, "internal gateway error")


# --- HTTP semantics: HEAD, 405, HTTP/1.0, Connection: close ----------------------------------


async def test_head_is_answered_as_get_with_its_content_length_and_no_body() -> None:
    app = App()
    _, transport = open_connection(app)
    transport.feed(request_bytes("HEAD", "/healthz") + request_bytes("GET", "/after"))
    await eventually(lambda: transport.writes == 2)
    assert transport.take() == ok(b"GET /healthz ")[: -len(b"GET /healthz ")] + ok(b"GET /after ")
    assert [r.method for r in app.seen] == ["GET", "GET"]
    assert not transport.closed


async def test_head_of_a_stream_is_its_head_alone_and_the_body_is_closed_unread() -> None:
    body = _Exhausting([b"never sent"])
    app = App()
    app.stream = StreamResponse(200, body, [("x-a", "1")])
    _, transport = open_connection(app)
    transport.feed(request_bytes("HEAD", "/stream"))
    await eventually(lambda: body.closed)
    assert transport.take() == STREAM_HEAD
    assert body._chunks == [b"never sent"]
    assert not transport.closed


class Refusing(App):
    """Answers 405 for every path, as the app does for a method a path does not take."""

    async def __call__(self, request: Request) -> Response | StreamResponse:
        self.seen.append(request)
        return Response(405, b"no", content_type="text/plain")


async def test_a_405_carries_allow_from_the_apps_table_with_head_wherever_get_is() -> None:
    app = Refusing()
    server, transport = open_connection(app)
    server.allowed_methods = {"/v1/chat/completions": ("POST",), "/healthz": ("GET",)}
    transport.feed(
        request_bytes("GET", "/v1/chat/completions")
        + request_bytes("POST", "/healthz")
        + request_bytes("PUT", "/unknown")
    )
    await eventually(lambda: transport.writes == 3)
    head = b"HTTP/1.1 405 Method Not Allowed\r\ncontent-type: text/plain\r\n"
    assert transport.take() == (
        head
        + b"allow: POST\r\ncontent-length: 2\r\n\r\nno"
        + head
        + b"allow: GET, HEAD\r\ncontent-length: 2\r\n\r\nno"
        + head
        + b"content-length: 2\r\n\r\nno"  # a path the table does not know
    )


async def test_an_allow_header_the_app_set_is_kept() -> None:
    class Allowing(App):
        async def __call__(self, request: Request) -> Response | StreamResponse:
            return Response(405, b"", [("Allow", "GET")], content_type="text/plain")

    server, transport = open_connection(Allowing())
    server.allowed_methods = {"/x": ("POST",)}
    transport.feed(request_bytes("PUT", "/x"))
    await eventually(lambda: bool(transport.written))
    assert transport.take().count(b"llow: ") == 1


async def test_http_1_0_without_keep_alive_is_closed_after_its_answer() -> None:
    app = App()
    _, transport = open_connection(app)
    transport.feed(b"GET /old HTTP/1.0\r\n\r\n")
    await eventually(lambda: transport.lost)
    assert transport.take() == ok(b"GET /old ", CLOSE)


async def test_http_1_0_with_keep_alive_is_told_so_and_kept() -> None:
    app = App()
    _, transport = open_connection(app)
    transport.feed(b"GET /old HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
    await eventually(lambda: bool(transport.written))
    assert transport.take() == ok(b"GET /old ", b"connection: keep-alive\r\n")
    assert not transport.closed


RAW_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-a: 1\r\n"
    b"cache-control: no-cache\r\nconnection: close\r\n\r\n"
)


@pytest.mark.parametrize("keep_alive", [b"", b"connection: keep-alive\r\n"])
async def test_a_stream_to_http_1_0_is_written_raw_and_ended_by_the_close(
    keep_alive: bytes,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b"data: 1\n\n", b"", b"data: 2\n\n"):
            yield chunk

    app = App()
    app.stream = StreamResponse(200, chunks(), [("x-a", "1")])
    _, transport = open_connection(app)
    transport.feed(b"GET /stream HTTP/1.0\r\n%s\r\n" % keep_alive)
    await eventually(lambda: transport.lost)
    assert transport.take() == RAW_STREAM_HEAD + b"data: 1\n\ndata: 2\n\n"


async def test_a_stream_to_http_1_0_breaking_after_its_head_is_cut_by_the_close() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"part"
        raise RuntimeError("upstream went away")

    app = App()
    app.stream = StreamResponse(200, chunks(), [("x-a", "1")])
    _, transport = open_connection(app)
    transport.feed(b"GET /stream HTTP/1.0\r\n\r\n")
    await eventually(lambda: transport.lost)
    assert transport.take() == RAW_STREAM_HEAD + b"part"


async def test_a_stream_to_connection_close_is_chunked_then_closed() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"one"

    app = App()
    app.stream = StreamResponse(200, chunks(), [("x-a", "1")])
    _, transport = open_connection(app)
    transport.feed(request_bytes("GET", "/stream", [("connection", "close")]))
    await eventually(lambda: transport.lost)
    assert transport.take() == (
        STREAM_HEAD.replace(b"\r\n\r\n", b"\r\n" + CLOSE + b"\r\n") + b"3\r\none\r\n0\r\n\r\n"
    )


# --- errors, disconnects, idle connections ---------------------------------------------------


async def test_a_handler_error_is_a_500_and_the_connection_closes() -> None:
    app = App()
    _, transport = open_connection(app)
    transport.feed(request_bytes("GET", "/boom") + request_bytes("GET", "/after"))
    await eventually(lambda: transport.lost)
    assert transport.take() == error_bytes(500, "internal gateway error")
    assert [r.path for r in app.seen] == ["/boom"]


@pytest.mark.parametrize("goes_away", [FakeTransport.peer_reset, FakeTransport.peer_eof])
async def test_a_client_that_goes_away_cancels_its_handler(goes_away: object) -> None:
    app = App()
    app.hold("/slow")
    server, transport = open_connection(app)
    transport.feed(request_bytes("GET", "/slow"))
    await settle()
    assert app.seen and app.cancelled == []
    goes_away(transport)  # type: ignore[operator]
    await eventually(lambda: app.cancelled == ["/slow"] and transport.lost)
    assert transport.written == b""
    assert server.connections == set()


# --- where the limits come from --------------------------------------------------------------


def test_the_limits_come_from_flags_then_environment_then_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tiergate_gateway.__main__ import parse_args

    monkeypatch.setenv("TIERGATE_GATEWAY_MAX_CONNECTIONS", "64")
    monkeypatch.setenv("TIERGATE_GATEWAY_HEADER_TIMEOUT_SECONDS", "2.5")
    settings, _ = parse_args(
        ["--config-file", "c.json", "--max-line-bytes", "1024", "--header-timeout-seconds", "3"]
    )
    assert settings.server_limits() == ServerLimits(
        max_line_bytes=1024, header_timeout_seconds=3.0, max_connections=64
    )
    with pytest.raises(SystemExit):
        parse_args(["--config-file", "c.json", "--idle-seconds", "0"])


# --- drain ---------------------------------------------------------------------------------

CUT = b'data: {"error":"cut"}\n\n'


async def test_a_stream_still_open_after_the_grace_period_ends_with_the_cut_event() -> None:
    more = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        await more.wait()  # an upstream that has nothing more to say in time
        yield b"data: 2\n\n"

    app = App()
    app.stream = StreamResponse(200, chunks(), [("x-a", "1")])
    server, transport = open_connection(app)
    transport.feed(request_bytes("GET", "/stream"))
    await eventually(lambda: transport.writes == 1)
    await server.shutdown(0.05, cut_stream_with=CUT)
    assert transport.take() == (
        STREAM_HEAD + b"9\r\ndata: 1\n\n\r\n" + b"%x\r\n" % len(CUT) + CUT + b"\r\n0\r\n\r\n"
    )
    assert transport.closed


async def test_a_connection_that_is_not_mid_stream_is_closed_without_an_event() -> None:
    app = App()
    release = app.hold("/slow")
    server, transport = open_connection(app)
    transport.feed(request_bytes("GET", "/slow"))
    await settle()
    await server.shutdown(0.05, cut_stream_with=CUT)
    assert transport.take() == b""  # a plain answer not begun: nothing half-written to end
    assert transport.closed
    release.set()


async def test_once_keep_alive_is_off_answers_close_their_connection() -> None:
    app = App()
    server, transport = open_connection(app)
    server.keep_alive = False  # what the gateway sets during its drain delay
    transport.feed(request_bytes("GET", "/x"))
    await eventually(lambda: transport.lost)
    assert transport.take() == ok(b"GET /x ", CLOSE)


# --- work left for after the answer ----------------------------------------------------


async def test_an_answers_after_work_runs_once_it_is_written_and_outlives_the_client() -> None:
    """``Response.after`` (a call's settle) runs after the write; a client that leaves meanwhile
    does not cancel it: a settle cut halfway would lose what the call cost."""
    release = asyncio.Event()
    ran: list[str] = []

    async def after() -> None:
        ran.append("started")
        await release.wait()
        ran.append("finished")

    async def app(request: Request) -> Response:
        return Response(200, b"done", content_type="text/plain", after=after)

    server = HttpServer(app, error_bytes, MAX_BODY)
    transport = connect(server.new_connection())
    transport.feed(request_bytes("GET", "/x"))
    await eventually(lambda: ran == ["started"])
    assert transport.take() == ok(b"done")  # written before the after-work started
    transport.peer_reset()  # the client leaves while it runs
    await settle()
    release.set()
    await eventually(lambda: ran == ["started", "finished"])


async def test_an_error_in_after_work_is_counted_and_never_reaches_the_client() -> None:
    errors: list[str] = []

    async def after() -> None:
        raise RuntimeError("settle bug")

    async def app(request: Request) -> Response:
        return Response(200, b"done", content_type="text/plain", after=after)

    server = HttpServer(app, error_bytes, MAX_BODY)
    server.on_internal_error = errors.append
    transport = connect(server.new_connection())
    transport.feed(request_bytes("GET", "/x"))
    await eventually(lambda: errors == ["after_answer"])
    await settle()
    assert transport.take() == ok(b"done")  # nothing after the answer
    transport.feed(request_bytes("GET", "/y"))  # and the connection serves on
    await eventually(lambda: bool(transport.written))
    assert transport.take() == ok(b"done")
