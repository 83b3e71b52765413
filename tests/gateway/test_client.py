"""The pooled upstream client, byte for byte: ``loop.create_connection`` hands out fake
transports, the test plays the upstream, and the request bytes are compared whole."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator

import pytest

from tests.support.protocol import FakeConnector, FakeTransport, eventually
from tiergate_gateway.client import (
    Endpoint,
    UpstreamConnectError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamResponse,
    header_lines,
)

API = Endpoint.parse("http://api.example:8000/v1/")
HEADERS = header_lines([("content-type", "application/json"), ("authorization", "Bearer k")])
BODY = b'{"model": "m"}'
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: api.example:8000\r\ncontent-length: 14\r\n"
    b"content-type: application/json\r\nauthorization: Bearer k\r\n\r\n" + BODY
)


def answer(body: bytes, *headers: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body),
        b"".join(h + b"\r\n" for h in headers),
        body,
    )


@pytest.fixture
async def upstream(monkeypatch: pytest.MonkeyPatch) -> FakeConnector:
    connector = FakeConnector()
    monkeypatch.setattr(
        asyncio.get_running_loop(), "create_connection", connector.create_connection
    )
    return connector


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool(tick_seconds=0.005)
    yield pool
    await pool.close()


def call(
    pool: UpstreamPool,
    *,
    body: bytes = BODY,
    first_byte_timeout: float = 5.0,
    total: float = 10.0,
    endpoint: Endpoint = API,
) -> asyncio.Task[UpstreamResponse]:
    """Start a request; the test answers it through the connector's transport."""
    return asyncio.get_running_loop().create_task(
        pool.request(
            endpoint,
            "/chat/completions",
            HEADERS,
            body,
            connect_timeout=1.0,
            first_byte_timeout=first_byte_timeout,
            deadline=pool.loop.time() + total,
        )
    )


async def sent(upstream: FakeConnector, count: int = 1) -> FakeTransport:
    """The transport of the ``count``-th connection, once a request was written on it."""
    await eventually(lambda: len(upstream.transports) >= count)
    transport = upstream.transports[count - 1]
    await eventually(lambda: bool(transport.written))
    return transport


async def exchange(pool: UpstreamPool, upstream: FakeConnector, reply: bytes, count: int) -> bytes:
    """One whole request on connection number ``count``; returns the body read."""
    task = call(pool)
    transport = await sent(upstream, count)
    assert transport.take() == REQUEST
    transport.feed(reply)
    response = await task
    return await response.read_all()


# --- requests and responses ------------------------------------------------------------------


async def test_the_request_goes_out_as_exact_bytes_and_the_answer_is_read(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    task = call(pool)
    transport = await sent(upstream)
    assert transport.take() == REQUEST
    assert transport.writes == 1
    assert upstream.dials == [("api.example", 8000, {"ssl": None, "server_hostname": None})]
    transport.feed(
        answer(
            b'{"ok": true}',
            b"Content-Type: application/json",
            b"Retry-After: 3",
            b"X-Request-Id: req_123",
            b"openai-processing-ms: 12",
        )
    )
    response = await task
    assert response.status == 200
    assert response.headers == {
        "content-type": "application/json",
        "retry-after": "3",
        "x-request-id": "req_123",
    }
    assert await response.read_all() == b'{"ok": true}'
    assert response.finished


async def test_an_empty_body_is_a_get_with_a_zero_length() -> None:
    pool = UpstreamPool(tick_seconds=0.005)
    connector = FakeConnector()
    loop = asyncio.get_running_loop()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "create_connection", connector.create_connection)
        task = call(pool, body=b"", endpoint=Endpoint.parse("http://models.example"))
        transport = await sent(connector)
        assert transport.take() == (
            b"GET /chat/completions HTTP/1.1\r\nhost: models.example\r\ncontent-length: 0\r\n"
            + HEADERS
            + b"\r\n"
        )
        transport.feed(answer(b"[]"))
        assert await (await task).read_all() == b"[]"
        await pool.close()


async def test_https_dials_with_tls_and_the_host_name(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    task = call(pool, endpoint=Endpoint.parse("https://api.example/v1"))
    transport = await sent(upstream)
    assert transport.take().startswith(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: api.example\r\n"
    )
    (host, port, options) = upstream.dials[0]
    assert (host, port, options["server_hostname"]) == ("api.example", 443, "api.example")
    assert isinstance(options["ssl"], ssl.SSLContext)
    transport.feed(answer(b""))
    await (await task).read_all()


async def test_a_chunked_answer_is_read_piece_by_piece_as_it_arrives(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    task = call(pool)
    transport = await sent(upstream)
    transport.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
    response = await task
    assert await response.read() == b"hello"
    assert not response.finished
    reading = asyncio.ensure_future(response.read())
    await asyncio.sleep(0)
    assert not reading.done()
    transport.feed(b"1\r\n!\r\n")
    assert await reading == b"!"
    transport.feed(b"0\r\n\r\n")
    assert await response.read() == b""
    assert response.finished


@pytest.mark.parametrize("size", [1, 2, 5, 13])
async def test_an_answer_split_into_small_pieces_reads_whole(
    pool: UpstreamPool, upstream: FakeConnector, size: int
) -> None:
    task = call(pool)
    transport = await sent(upstream)
    transport.feed_in_pieces(
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 12\r\ncontent-type: text/plain\r\n"
        b"transfer-encoding: chunked\r\n\r\n4\r\nslow\r\n6\r\n down\n\r\n0\r\n\r\n",
        size,
    )
    response = await task
    assert (response.status, response.headers) == (
        429,
        {"retry-after": "12", "content-type": "text/plain"},
    )
    assert await response.read_all() == b"slow down\n"


# --- keep-alive and the pool ----------------------------------------------------------------


async def test_a_connection_is_reused_once_its_answer_was_read_whole(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    assert await exchange(pool, upstream, answer(b"one"), 1) == b"one"
    assert await exchange(pool, upstream, answer(b"two"), 1) == b"two"
    assert len(upstream.dials) == 1
    assert not upstream.last.closed


async def test_an_answer_with_connection_close_is_not_reused(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    assert await exchange(pool, upstream, answer(b"one", b"connection: close"), 1) == b"one"
    assert upstream.transports[0].closed
    assert await exchange(pool, upstream, answer(b"two"), 2) == b"two"
    assert len(upstream.dials) == 2


async def test_an_answer_closed_before_it_was_read_whole_drops_the_connection(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    task = call(pool)
    transport = await sent(upstream)
    transport.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
    response = await task
    assert await response.read() == b"half"
    response.close()
    assert transport.closed
    assert await exchange(pool, upstream, answer(b"x"), 2) == b"x"


async def test_idle_connections_beyond_the_cap_are_closed() -> None:
    connector = FakeConnector()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(asyncio.get_running_loop(), "create_connection", connector.create_connection)
        pool = UpstreamPool(max_idle_per_host=1, tick_seconds=0.005)
        first, second = call(pool), call(pool)
        await eventually(lambda: len(connector.transports) == 2)
        for transport in connector.transports:
            await eventually(lambda t=transport: bool(t.written))  # type: ignore[misc]
            transport.feed(answer(b"ok"))
        for task in (first, second):
            assert await (await task).read_all() == b"ok"
        assert [t.closed for t in connector.transports] == [False, True]
        await pool.close()
        assert connector.transports[0].closed


# --- stale pooled connections ----------------------------------------------------------------


async def test_a_pooled_connection_the_upstream_closed_while_idle_is_not_used(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    await exchange(pool, upstream, answer(b"one"), 1)
    upstream.transports[0].peer_eof()  # the upstream's idle timeout
    await eventually(lambda: upstream.transports[0].lost)
    assert await exchange(pool, upstream, answer(b"two"), 2) == b"two"
    assert upstream.transports[0].written == b""


@pytest.mark.parametrize("goes_away", [FakeTransport.peer_eof, FakeTransport.peer_reset])
async def test_a_pooled_connection_closed_as_it_is_reused_is_retried_on_a_fresh_one(
    pool: UpstreamPool, upstream: FakeConnector, goes_away: object
) -> None:
    # The upstream's close crossed our request on the wire: nothing came back, so it was
    # never answered and goes out again on a new connection.
    await exchange(pool, upstream, answer(b"one"), 1)
    task = call(pool)
    stale = await sent(upstream, 1)
    assert stale.take() == REQUEST
    goes_away(stale)  # type: ignore[operator]
    fresh = await sent(upstream, 2)
    assert fresh.take() == REQUEST
    fresh.feed(answer(b"two"))
    assert await (await task).read_all() == b"two"


async def test_a_reused_connection_that_breaks_after_answering_part_is_not_retried(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    await exchange(pool, upstream, answer(b"one"), 1)
    task = call(pool)
    transport = await sent(upstream, 1)
    transport.feed(b"HTTP/1.1 200 OK\r\ncontent-le")
    transport.peer_reset()
    with pytest.raises(UpstreamProtocolError, match="upstream closed the connection"):
        await task
    assert len(upstream.dials) == 1


async def test_a_fresh_connection_closed_before_the_answer_fails_without_a_retry(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    task = call(pool)
    transport = await sent(upstream)
    transport.peer_eof()
    with pytest.raises(UpstreamProtocolError, match="upstream closed the connection: EOF"):
        await task
    assert len(upstream.dials) == 1


async def test_an_upstream_that_keeps_closing_reused_connections_fails_after_three() -> None:
    connector = FakeConnector()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(asyncio.get_running_loop(), "create_connection", connector.create_connection)
        pool = UpstreamPool(tick_seconds=0.005)
        warm = [call(pool) for _ in range(3)]
        await eventually(lambda: len(connector.transports) == 3)
        for transport in connector.transports:
            await eventually(lambda t=transport: bool(t.written))  # type: ignore[misc]
            transport.take()
            transport.feed(answer(b""))
        for task in warm:
            await (await task).read_all()
        task = call(pool)
        for number in (3, 2, 1):  # most recently pooled first
            stale = connector.transports[number - 1]
            await eventually(lambda t=stale: bool(t.written))  # type: ignore[misc]
            stale.peer_reset()
        with pytest.raises(UpstreamProtocolError, match="keeps closing connections"):
            await task
        assert len(connector.dials) == 3
        await pool.close()


async def test_a_close_delimited_body_is_refused_as_documented(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    # Only Content-Length or chunked framing (module docstring): a body ended by EOF fails.
    task = call(pool)
    transport = await sent(upstream)
    transport.feed(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nsome")
    response = await task
    assert await response.read() == b"some"
    transport.peer_eof()
    with pytest.raises(UpstreamProtocolError):
        await response.read()


async def test_a_malformed_answer_fails_and_drops_the_connection(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    task = call(pool)
    transport = await sent(upstream)
    transport.feed(b"SMTP READY\r\n\r\n")
    with pytest.raises(UpstreamProtocolError, match="malformed upstream response"):
        await task
    assert transport.closed


# --- deadlines -------------------------------------------------------------------------------


async def test_no_answer_within_the_first_byte_timeout_fails_and_closes(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    started = time.monotonic()
    task = call(pool, first_byte_timeout=0.05)
    transport = await sent(upstream)
    with pytest.raises(TimeoutError, match="first-byte timeout"):
        await task
    assert 0.05 <= time.monotonic() - started < 1.0
    assert transport.closed


async def test_a_body_slower_than_the_total_deadline_fails_the_read(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    task = call(pool, first_byte_timeout=5.0, total=0.1)
    transport = await sent(upstream)
    transport.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n")
    response = await task
    assert await response.read() == b"a"
    with pytest.raises(TimeoutError, match="total timeout"):
        await response.read()
    assert transport.closed


async def test_the_first_byte_timeout_never_outlasts_the_total_deadline(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    started = time.monotonic()
    task = call(pool, first_byte_timeout=30.0, total=0.05)
    await sent(upstream)
    with pytest.raises(TimeoutError):
        await task
    assert time.monotonic() - started < 1.0


async def test_the_deadline_ticker_stops_when_idle_and_deadlines_hold_after(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    """No exchange armed, no wake-ups: the ticker ends, and the next request starts it again
    (a first-byte timeout after an idle spell still fires)."""
    task = call(pool)
    transport = await sent(upstream)
    assert pool.ticking
    transport.take()
    transport.feed(answer(b"quick"))
    assert await (await task).read_all() == b"quick"
    await eventually(lambda: not pool.ticking)
    started = time.monotonic()
    task = call(pool, first_byte_timeout=0.05)
    await sent(upstream)
    assert pool.ticking
    with pytest.raises(TimeoutError, match="first-byte timeout"):
        await task
    assert time.monotonic() - started < 1.0
    await eventually(lambda: not pool.ticking)


async def test_a_read_answer_is_not_timed_out_while_it_waits_in_the_pool(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    task = call(pool, first_byte_timeout=0.02, total=0.05)
    transport = await sent(upstream)
    assert transport.take() == REQUEST
    transport.feed(answer(b"quick"))
    assert await (await task).read_all() == b"quick"
    await asyncio.sleep(0.1)
    assert not transport.closed
    assert await exchange(pool, upstream, answer(b"again"), 1) == b"again"


async def test_a_connect_slower_than_the_connect_timeout_fails(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    upstream.hang = True
    with pytest.raises(UpstreamConnectError, match=r"connect to api\.example:8000 timed out"):
        await pool.request(
            API,
            "/x",
            b"",
            b"",
            connect_timeout=0.05,
            first_byte_timeout=5,
            deadline=pool.loop.time() + 5,
        )


async def test_a_refused_connect_fails_as_a_connect_error(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    upstream.refuse = ConnectionRefusedError(111, "Connection refused")
    with pytest.raises(UpstreamConnectError, match=r"cannot connect to api\.example:8000"):
        await call(pool)


async def test_a_cancelled_request_closes_its_connection(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    task = call(pool)
    transport = await sent(upstream)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.closed
    assert await exchange(pool, upstream, answer(b"next"), 2) == b"next"


# --- a pushed body (UpstreamResponse.stream_into) ---------------------------------------------


class Sink:
    """Records what a pushed body is told, in order."""

    def __init__(self) -> None:
        self.told: list[tuple[str, bytes | str]] = []

    def on_data(self, data: bytes) -> None:
        self.told.append(("data", data))

    def on_end(self) -> None:
        self.told.append(("end", b""))

    def on_error(self, exc: Exception) -> None:
        self.told.append(("error", type(exc).__name__))


async def _pushing(pool: UpstreamPool, upstream: FakeConnector) -> tuple[FakeTransport, Sink]:
    task = call(pool)
    transport = await sent(upstream)
    transport.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
    response = await task
    assert await response.read() == b"first"
    sink = Sink()
    response.stream_into(sink)
    return transport, sink


async def test_a_pushed_read_of_several_chunks_is_one_piece(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    transport, sink = await _pushing(pool, upstream)
    transport.feed(b"2\r\nab\r\n3\r\ncde\r\n1\r\nf\r\n")  # three chunks in one read
    transport.feed(b"1\r\ng\r\n")
    assert sink.told == [("data", b"abcdef"), ("data", b"g")]


async def test_a_pushed_body_ends_after_its_last_piece(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    transport, sink = await _pushing(pool, upstream)
    transport.feed(b"2\r\nab\r\n0\r\n\r\n")  # the last chunk and the end in one read
    assert sink.told == [("data", b"ab"), ("end", b"")]


async def test_a_pushed_body_broken_mid_read_hands_on_what_came_first(
    pool: UpstreamPool, upstream: FakeConnector
) -> None:
    transport, sink = await _pushing(pool, upstream)
    transport.feed(b"2\r\nab\r\nzz-not-a-chunk-size\r\n")
    assert sink.told == [("data", b"ab"), ("error", "UpstreamProtocolError")]
