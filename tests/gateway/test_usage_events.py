"""The usage events a stream's client did not ask for: dropped as splitting would drop them."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tiergate_gateway.sse import SseFilter, without_usage_events


def _by_splitting(chunk: bytes) -> bytes:
    """The definition: split at blank lines, drop the events whose data is an object with
    ``"choices": []`` and a usage that is not null, join the rest."""
    kept = []
    for event in chunk.split(b"\n\n"):
        if b'"usage"' in event:
            at = event.find(b"data:")
            try:
                parsed = orjson.loads(event[at + 5 :] if at >= 0 else b"")
            except orjson.JSONDecodeError:
                parsed = None
            if (
                isinstance(parsed, dict)
                and parsed.get("choices") == []
                and parsed.get("usage") is not None
            ):
                continue
        kept.append(event)
    return b"\n\n".join(kept)


_PIECES = [
    b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}',
    b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}',
    b'data: {"choices":[]}',
    b'data: {"choices":[],"prompt_filter_results":[],"usage":null}',
    b'data: {"choices":[],"usage": null}',
    b'data: {"choices":[],"meta":{"usage":null},"usage":{"prompt_tokens":1}}',
    b'data: {"choices":[],"usage":{"prompt_tokens":1},"meta":{"usage":null}}',
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


@given(parts=st.lists(st.sampled_from(_PIECES), max_size=8))
def test_a_filter_drops_usage_events_from_whole_events_as_splitting_does(
    parts: list[bytes],
) -> None:
    """``SseFilter`` cuts a stream's usage event by the bounds it read it at when it can; the
    result is the definition's, whatever else the piece holds."""
    chunk = b"".join(part + b"\n\n" for part in parts)
    assert SseFilter(strip_usage=True).take(chunk) == _by_splitting(chunk)


def test_another_providers_empty_choices_event_reaches_a_client_that_did_not_ask() -> None:
    """Azure's first event has ``"choices": []`` (content filter results) with or without usage
    asked for: it is the provider's, not the usage event the gateway asked for."""
    filtered = b'data: {"choices":[],"prompt_filter_results":[{"prompt_index":0}],"usage":null}\n\n'
    content = b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    done = b"data: [DONE]\n\n"
    events = SseFilter(strip_usage=True)
    assert events.take(filtered + content + usage + done) == filtered + content + done
    assert events.usage is not None and events.usage.prompt_tokens == 3


def test_the_usage_is_read_past_the_null_usages_after_it_in_one_piece() -> None:
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    late = b'data: {"choices":[{"delta":{}}],"usage":null}\n\n'
    events = SseFilter()
    assert events.take(usage + late) == usage + late
    assert events.usage is not None and events.usage.completion_tokens == 1
