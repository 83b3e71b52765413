"""The body of a streamed answer: upstream SSE chunks relayed as they arrive, unbuffered.

The relay owns the rest of the call: closing it (the server always does, at the
end of the stream or when the client goes away) closes the upstream response,
records the usage the stream reported and leaves the call's admission.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson

from .admission import Admission
from .client import UpstreamProtocolError
from .errors import envelope
from .handover import AsyncManager
from .proxy import Served
from .server import StreamResponse
from .usage import SseUsageScanner, Usage

__all__ = ["Relay", "relay"]


_MAX_CARRY_BYTES = 1024 * 1024  # an event longer than this is relayed in pieces


def _event_end(data: bytes) -> int:
    """Where the last complete SSE event in ``data`` ends (0: none ends in it)."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def _without_usage_events(chunk: bytes, known: tuple[bytes, object] | None = None) -> bytes:
    """``chunk`` (whole SSE events) without the usage-only events (``"choices": []``) a client
    that did not ask for usage would not expect; the usage was read from them already.
    ``known``: an event (a ``data:`` line) and what it decodes to, not decoded again.

    The result is that of splitting at ``\\n\\n``, dropping those events and joining the rest.
    Only the events naming ``"usage"`` are looked at, found from the end (where the usage
    event of a stream is): scanning a chunk costs several instructions per byte. Next to a
    run of three or more newlines the events are not where a search says (``split`` takes
    such a run's pairs from the left): then the whole chunk is split."""
    end = len(chunk)  # what is left to look at: chunk[:end] (with the separator ending it)
    at = chunk.rfind(b'"usage"')
    while at >= 0:
        before = chunk.rfind(b"\n\n", 0, at)
        begin = before + 2 if before >= 0 else 0
        after = chunk.find(b"\n\n", at, end)
        stop = after if after >= 0 else len(chunk)
        if (before > 0 and chunk[before - 1] == 10) or chunk[stop + 2 : stop + 3] == b"\n":
            return _without_usage_events_split(chunk, known)
        if _usage_only(chunk[begin:stop], known):
            if begin:
                chunk = chunk[: begin - 2] + chunk[stop:]
            else:
                chunk = chunk[stop + 2 :] if after >= 0 else b""
        if before < 0:
            break
        end = before + 2
        at = chunk.rfind(b'"usage"', 0, before)
    return chunk


def _usage_only(event: bytes, known: tuple[bytes, object] | None) -> bool:
    parsed: object
    if known is not None and event == known[0]:
        parsed = known[1]
    else:
        start = event.find(b"data:")
        data = event[start + 5 :] if start >= 0 else b""
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
    return isinstance(parsed, dict) and parsed.get("choices") == []


def _without_usage_events_split(chunk: bytes, known: tuple[bytes, object] | None) -> bytes:
    return b"\n\n".join(
        [
            event
            for event in chunk.split(b"\n\n")
            if event.find(b'"usage"') < 0 or not _usage_only(event, known)
        ]
    )


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
    headers = stream.response.headers
    content_type = headers.get("content-type", "text/event-stream")
    upstream_id = headers.get("x-request-id")
    if upstream_id is not None:
        admission.headers.append(("x-upstream-request-id", upstream_id))
    return StreamResponse(
        200, Relay(stream, admission, exit, ended, strip_usage), admission.headers, content_type
    )


class Relay:
    """An async iterator of chunks; ``aclose`` ends the call (idempotent)."""

    __slots__ = (
        "_admission",
        "_carry",
        "_chunks",
        "_done",
        "_ended",
        "_error",
        "_exit",
        "_pending",
        "_response",
        "_scanner",
        "_strip_usage",
    )

    def __init__(
        self,
        stream: Served,
        admission: Admission,
        exit: AsyncManager[Admission],
        ended: Ended | None = None,
        strip_usage: bool = False,
    ) -> None:
        self._strip_usage = strip_usage
        self._pending: bytes | None = stream.body
        self._response = stream.response
        self._admission = admission
        self._exit: AsyncManager[Admission] | None = exit  # None once closed
        self._ended = ended
        self._error: str | None = None
        self._scanner = SseUsageScanner()
        self._done = False
        self._chunks = 0
        self._carry = b""  # the start of an event whose end has not arrived

    @property
    def exhausted(self) -> bool:
        """Would the next ``__anext__`` end the stream? (Lets the server send the end with the last chunk.)"""
        if not self._done and self._pending is None and not self._carry and self._response.finished:
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
                self._done = True
                self._error = "upstream_stream_interrupted"
                # The partial event is dropped: the error event must not be glued to it.
                self._carry = b""
                reason = "timed out" if isinstance(exc, TimeoutError) else "broke off"
                return (
                    b"data: "
                    + envelope(
                        f"the upstream stream {reason}",
                        "upstream_error",
                        "upstream_stream_interrupted",
                    )
                    + b"\n\n"
                )
            if not chunk:
                self._done = True
                tail, self._carry = self._carry, b""
                if tail:  # the upstream ended mid-event: pass on what it sent
                    return tail
                raise StopAsyncIteration
        self._chunks += 1
        self._scanner.feed(chunk)
        if self._carry:
            chunk, self._carry = self._carry + chunk, b""
        if not chunk.endswith(b"\n\n"):
            # Whole events only, so that an error event after a break starts on its own line
            # (the client's SSE parser would glue it to the broken event otherwise).
            cut = _event_end(chunk)
            if len(chunk) - cut <= _MAX_CARRY_BYTES:
                chunk, self._carry = chunk[:cut], chunk[cut:]
        if self._strip_usage and (chunk.find(b'"usage":{') >= 0 or chunk.find(b'"usage": {') >= 0):
            chunk = _without_usage_events(chunk, self._scanner.parsed)
        return chunk

    async def aclose(self) -> None:
        exit, self._exit = self._exit, None
        if exit is None:
            return  # closed already
        # Closed before its end, the stream was abandoned: the client left and the server's
        # task is being cancelled.
        done = self._done or (self._pending is None and self._response.finished)
        abandoned = None if done else asyncio.CancelledError
        self._done = True
        self._response.close()
        admission = self._admission
        if admission.usage is None:
            # Without a usage chunk, each relayed chunk counts as one completion token.
            admission.usage = self._scanner.usage or Usage(0, self._chunks, False)
        try:
            await exit.__aexit__(abandoned, None, None)
        finally:
            if self._ended is not None:
                self._ended(self._error or (None if done else "client_disconnected"))
