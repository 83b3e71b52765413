"""What of an upstream's SSE body goes to the client, piece by piece: pure, no I/O.

``SseFilter.take`` is called for every piece a stream relays (tens of thousands a second on
one worker), so it searches each piece once for ``"usage"`` and does nothing else unless
that is found: each ``bytes.find`` costs hundreds of instructions of argument parsing alone.
"""

from __future__ import annotations

import orjson

from .usage import Usage, usage_of

__all__ = ["MAX_CARRY_BYTES", "SseFilter", "without_usage_events"]

MAX_CARRY_BYTES = 1024 * 1024  # an event longer than this is relayed in pieces

# Where a usage event's line may be cut out by its bounds alone: after one blank line (not
# two) and before one blank line (then the end, or anything but another newline). A run of
# three newlines would be split elsewhere (see ``without_usage_events``).
_ONE_BLANK_LINE = frozenset(bytes([c]) + b"\n\n" for c in range(256) if c != 10)
_ONE_BLANK_LINE_AND_MORE = frozenset(b"\n\n" + bytes([c]) for c in range(256) if c != 10) | {
    b"\n\n"
}


class SseFilter:
    """Cuts an SSE body into whole events and notes its last ``usage`` object.

    Whole events only, so that an error event after a break starts on its own line (the
    client's SSE parser would glue it to a broken event otherwise). OpenAI sends
    ``"usage":null`` in every event when usage is asked for and the totals in the last one; a
    ``"usage"`` inside generated text is escaped (``\\"usage\\"``), so it never matches. With
    ``strip_usage`` the usage events (``"choices": []`` and a usage) are dropped once read: the
    gateway asks every upstream for usage, a client that did not would not expect them.
    """

    __slots__ = ("_carry", "_strip_usage", "parsed", "pieces", "usage")

    def __init__(self, strip_usage: bool = False) -> None:
        self._strip_usage = strip_usage
        self._carry = b""  # the start of an event whose end has not arrived
        self.pieces = 0
        self.usage: Usage | None = None
        # The last usage line decoded and what it decoded to (not decoded again to strip it).
        self.parsed: tuple[bytes, object] | None = None

    @property
    def holding(self) -> bool:
        """Is part of an event waiting for its end?"""
        return bool(self._carry)

    def take(self, piece: bytes) -> bytes:
        """The whole events that ``piece`` completes (maybe ``b""``)."""
        self.pieces += 1
        if self._carry:
            piece, self._carry = self._carry + piece, b""
        if piece[-2:] != b"\n\n":
            cut = _event_end(piece)
            if len(piece) - cut <= MAX_CARRY_BYTES:
                piece, self._carry = piece[:cut], piece[cut:]
        at = piece.rfind(b'"usage"')
        return self._usage_noted(piece, at) if at >= 0 else piece

    def end(self) -> bytes:
        """What is left when the body ends: the start of an event the upstream did not end."""
        tail, self._carry = self._carry, b""
        at = tail.rfind(b'"usage"')
        return self._usage_noted(tail, at) if at >= 0 else tail

    def _usage_noted(self, events: bytes, at: int) -> bytes:
        """``events`` after reading the last usage they name, the ``"usage"`` at ``at`` or
        before it, and without its event if asked.

        Only a usage the gateway can bill is kept in ``usage``; an event naming another is
        still dropped for a client that did not ask (its ``choices: []`` would surprise it).
        One method, not one per step: this runs for every stream."""
        at = _past_nulls(events, at)
        if at < 0:
            return events
        start = events.rfind(b"\n", 0, at) + 1
        stop = events.find(b"\n", at)  # -1: the line runs to the end
        line = events[start:stop] if stop >= 0 else events[start:]
        if line[:5] != b"data:":
            return events
        try:
            decoded = orjson.loads(line[5:])
        except orjson.JSONDecodeError:
            return events
        self.parsed = (line, decoded)
        found = usage_of(decoded)
        if found is not None:
            self.usage = found
        if not self._strip_usage:
            return events
        # The common case, cut by the line's bounds: the line is an event of its own and no
        # event before it names a usage. Anything else is left to ``without_usage_events``,
        # which defines the result.
        if (
            _past_nulls(events, events.rfind(b'"usage"', 0, start)) < 0
            and (start == 0 or events[start - 3 : start] in _ONE_BLANK_LINE)
            and events[stop : stop + 3] in _ONE_BLANK_LINE_AND_MORE
        ):
            return events[:start] + events[stop + 2 :] if _is_usage_only(decoded) else events
        return without_usage_events(events, self.parsed)

    def drop(self) -> None:
        """Forget a partial event (the stream broke: an error event follows instead)."""
        self._carry = b""


def _past_nulls(data: bytes, at: int) -> int:
    """The ``"usage"`` at ``at`` or the last one before it that does not name ``null`` (as
    every event but the last of an OpenAI stream that asked for usage does); -1: none."""
    while at >= 0 and (data[at + 7 : at + 12] == b":null" or data[at + 7 : at + 13] == b": null"):
        at = data.rfind(b'"usage"', 0, at)
    return at


def _event_end(data: bytes) -> int:
    """Where the last complete SSE event in ``data`` ends (0: none ends in it)."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def without_usage_events(chunk: bytes, known: tuple[bytes, object] | None = None) -> bytes:
    """``chunk`` (whole SSE events) without the usage events: data that decodes to an object
    with ``"choices": []`` and a ``"usage"`` that is not null. ``known``: an event (a
    ``data:`` line) and what it decodes to, not decoded again.

    The result is that of splitting at ``\\n\\n``, dropping those events and joining the rest.
    Only the events naming ``"usage"`` (not as ``"usage":null``) are looked at, found from the
    end (where the usage event of a stream is). Next to a run of three or more newlines the
    events are not where a search says (``split`` takes such a run's pairs from the left):
    then the whole chunk is split."""
    end = len(chunk)  # what is left to look at: chunk[:end] (with the separator ending it)
    at = chunk.rfind(b'"usage"')
    while (at := _past_nulls(chunk, at)) >= 0:  # (a null one may share an event with another)
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
    return _is_usage_only(parsed)


def _is_usage_only(parsed: object) -> bool:
    """Is this decoded event the usage event the gateway asked for: ``"choices": []`` and a
    usage? (Another provider's ``"choices": []`` event, with ``"usage": null``, is kept: a
    client gets it without asking for usage too.)"""
    return (
        isinstance(parsed, dict) and parsed.get("choices") == [] and parsed.get("usage") is not None
    )


def _without_usage_events_split(chunk: bytes, known: tuple[bytes, object] | None) -> bytes:
    return b"\n\n".join(
        [
            event
            for event in chunk.split(b"\n\n")
            if event.find(b'"usage"') < 0 or not _usage_only(event, known)
        ]
    )
