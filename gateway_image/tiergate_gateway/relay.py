"""The body of a streamed answer: upstream SSE chunks relayed as they arrive, unbuffered.

The relay owns the rest of the call: closing it (the server always does, at the
end of the stream or when the client goes away) closes the upstream response,
records the usage the stream reported and leaves the call's admission.

A stream the upstream had ended by the time its first event was read (a short or cached
answer) needs no relay: ``whole_stream`` answers it in one piece, and leaves the call once
that piece is written, as the relay does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .admission import Admission
from .client import UpstreamProtocolError
from .errors import envelope
from .handover import AsyncManager
from .proxy import Served
from .server import BodySink, Response, StreamResponse
from .sse import SseFilter
from .usage import Usage

__all__ = ["Relay", "relay", "whole_stream"]


Ended = Callable[[str | None], None]  # told when the stream ends: its error code, if it broke


def relay(
    stream: Served,
    admission: Admission,
    exit: AsyncManager[Admission],
    ended: Ended | None = None,
    strip_usage: bool = False,
) -> StreamResponse:
    """The client's answer to a served stream; it leaves the admission (``exit``) when it closes,
    then calls ``ended``."""
    content_type = _stream_headers(stream, admission)
    return StreamResponse(
        200, Relay(stream, admission, exit, ended, strip_usage), admission.headers, content_type
    )


def _stream_headers(stream: Served, admission: Admission) -> str:
    """Adds what a streamed answer carries from its upstream to ``admission.headers``; its
    content type."""
    headers = stream.response.headers
    upstream_id = headers.get("x-request-id")
    if upstream_id is not None:
        admission.headers.append(("x-upstream-request-id", upstream_id))
    return headers.get("content-type", "text/event-stream")


def whole_stream(
    stream: Served,
    admission: Admission,
    exit: AsyncManager[Admission],
    ended: Ended | None = None,
    strip_usage: bool = False,
) -> Response:
    """The client's answer to a stream whose whole body has arrived (``stream.response.finished``):
    the same events the relay would send, with a length instead of chunks. As for a relayed
    stream, the call is left (``exit``) and ``ended`` told once the answer is written."""
    response = stream.response
    response.close()  # read to its end: the connection goes back to the pool
    events = SseFilter(strip_usage)
    body = events.take(stream.body)
    if events.holding:  # the upstream ended mid-event: pass on what it sent
        body += events.end()
    admission.usage = events.usage or Usage(0, events.pieces, False)
    admission.headers.append(("cache-control", "no-cache"))  # chunked answers get it too
    content_type = _stream_headers(stream, admission)

    async def settle() -> None:
        try:
            await exit.__aexit__(None, None, None)
        finally:
            if ended is not None:
                ended(None)

    return Response(200, body, admission.headers, content_type, settle)


class Relay:
    """A stream's body for the server: the first pieces pulled (``__anext__``), the rest pushed
    (``push``) from the upstream connection's callbacks straight to the client's socket, with
    no task step per piece. ``aclose`` ends the call (idempotent)."""

    __slots__ = (
        "_admission",
        "_done",
        "_ended",
        "_error",
        "_events",
        "_exit",
        "_finished",
        "_pending",
        "_response",
        "_sink",
    )

    def __init__(
        self,
        stream: Served,
        admission: Admission,
        exit: AsyncManager[Admission],
        ended: Ended | None = None,
        strip_usage: bool = False,
    ) -> None:
        self._pending: bytes | None = stream.body
        self._response = stream.response
        self._admission = admission
        self._exit: AsyncManager[Admission] | None = exit  # None once closed
        self._ended = ended
        self._error: str | None = None
        self._events = SseFilter(strip_usage)
        self._done = False
        self._sink: BodySink | None = None  # while pushing
        self._finished: asyncio.Future[None] | None = None  # while pushing: done at the end

    @property
    def exhausted(self) -> bool:
        """Would the next ``__anext__`` end the stream? (Lets the server send the end with the last chunk.)"""
        if (
            not self._done
            and self._pending is None
            and not self._events.holding
            and self._response.finished
        ):
            self._done = True  # nothing more will come
        return self._done

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        if self._pending is not None:
            chunk, self._pending = self._pending, None
        else:
            try:
                chunk = await self._response.read()
            except (TimeoutError, UpstreamProtocolError) as exc:
                return self._interrupted(exc)
            if not chunk:
                self._done = True
                tail = self._events.end()
                if tail:  # the upstream ended mid-event: pass on what it sent
                    return tail
                raise StopAsyncIteration
        return self._events.take(chunk)

    def _interrupted(self, exc: Exception) -> bytes:
        """The error event that ends a stream the upstream broke off or let time out."""
        self._done = True
        self._error = "upstream_stream_interrupted"
        self._events.drop()  # the partial event: the error event must not be glued to it
        reason = "timed out" if isinstance(exc, TimeoutError) else "broke off"
        return (
            b"data: "
            + envelope(
                f"the upstream stream {reason}", "upstream_error", "upstream_stream_interrupted"
            )
            + b"\n\n"
        )

    # -- pushing: the server hands over its socket, the upstream connection calls back ----
    async def push(self, sink: BodySink) -> None:
        """Relay the rest of the body into ``sink`` as it arrives; return once it has ended
        (``sink.end`` written) or raise what broke the gateway's side of it."""
        if self._done:
            sink.end(b"")
            return
        finished = asyncio.get_running_loop().create_future()
        self._sink, self._finished = sink, finished
        pending, self._pending = self._pending, None
        try:
            if pending is not None:
                self.on_data(pending)
            if not finished.done():
                self._response.stream_into(self)
            await finished
        finally:
            # No reference cycle outlives the stream (sink <-> relay <-> upstream connection).
            self._sink = self._finished = None

    def pause(self) -> None:
        """The client's socket buffer is full: stop reading the upstream until ``resume``."""
        self._response.pause_reading()

    def resume(self) -> None:
        self._response.resume_reading()

    def on_data(self, data: bytes) -> None:
        sink = self._sink
        if sink is None:
            return  # ended already
        try:
            chunk = self._events.take(data)
        except Exception as exc:
            self._broken(exc)
            return
        if chunk:
            sink.send(chunk)

    def on_end(self) -> None:
        sink = self._sink
        if sink is None:
            return
        self._done = True
        sink.end(self._events.end())  # with what the upstream sent of an event it did not end
        self._finish()

    def on_error(self, exc: Exception) -> None:
        sink = self._sink
        if sink is None:
            return
        sink.end(self._interrupted(exc))
        self._finish()

    def _finish(self) -> None:
        finished = self._finished
        self._sink = None
        if finished is not None and not finished.done():
            finished.set_result(None)

    def _broken(self, exc: Exception) -> None:
        """A bug on the gateway's side of the stream: the server logs it and cuts the client."""
        self._sink = None
        self._response.close()
        finished = self._finished
        if finished is not None and not finished.done():
            finished.set_exception(exc)

    async def aclose(self) -> None:
        exit, self._exit = self._exit, None
        if exit is None:
            return  # closed already
        # Closed before its end, the stream was abandoned: the client left and the server's
        # task is being cancelled.
        done = self._done or (self._pending is None and self._response.finished)
        abandoned = None if done else asyncio.CancelledError
        self._done = True
        self._sink = None
        self._response.close()
        admission = self._admission
        if admission.usage is None:
            # Without a usage chunk, each relayed chunk counts as one completion token.
            events = self._events
            admission.usage = events.usage or Usage(0, events.pieces, False)
        try:
            await exit.__aexit__(abandoned, None, None)
        finally:
            if self._ended is not None:
                self._ended(self._error or (None if done else "client_disconnected"))
