"""The usage-only events a stream's client did not ask for: dropped as splitting would drop them."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tiergate_gateway.sse import SseFilter, without_usage_events


def _by_splitting(chunk: bytes) -> bytes:
    """The definition: split at blank lines, drop the events whose data is an object with
    ``"choices": []`` among those naming ``"usage"``, join the rest."""
    kept = []
    for event in chunk.split(b"\n\n"):
        if b'"usage"' in event:
            at = event.find(b"data:")
            try:
                parsed = orjson.loads(event[at + 5 :] if at >= 0 else b"")
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict) and parsed.get("choices") == []:
                continue
        kept.append(event)
    return b"\n\n".join(kept)


_PIECES = [
    b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}',
    b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}',
    b'data: {"choices":[]}',
    b'event: usage\ndata: {"choices":[],"usage":{}}',
    b'data: "usage"',
    b'data: {"usage": {}, "choices": []}',
    b"data: {broken",
    b"data: [DONE]",
    b": keep-alive",
    b"x",
    b"",
]
_ENDS = [b"", b"\n", b"\n\n", b"\n\n\n", b"\r\n", b"\r\n\r\n"]


@given(
    parts=st.lists(st.tuples(st.sampled_from(_PIECES), st.sampled_from(_ENDS)), max_size=8),
    use_scanner=st.booleans(),
)
def test_usage_events_are_dropped_exactly_as_splitting_drops_them(
    parts: list[tuple[bytes, bytes]], use_scanner: bool
) -> None:
    chunk = b"".join(piece + end for piece, end in parts)
    known = None
    if use_scanner:  # the relay passes the event the scanner decoded, not to decode it again
        events = SseFilter()
        events.take(chunk)
        known = events.parsed
    assert without_usage_events(chunk, known) == _by_splitting(chunk)


def test_a_streams_usage_event_is_dropped_and_the_rest_kept() -> None:
    content = b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    done = b"data: [DONE]\n\n"
    events = SseFilter()
    events.take(content + usage + done)
    assert without_usage_events(content + usage + done, events.parsed) == content + done
    assert without_usage_events(usage + done) == done
    assert without_usage_events(content + usage) == content
