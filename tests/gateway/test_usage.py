"""Usage reported by upstreams: JSON answers and SSE streams however they are split."""

from __future__ import annotations

import json
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from tiergate_gateway.sse import SseFilter
from tiergate_gateway.usage import Usage, usage_of


def test_usage_of_a_json_answer():
    assert usage_of({"usage": {"prompt_tokens": 3, "completion_tokens": 2}}) == Usage(3, 2, True)
    assert usage_of({"usage": {"prompt_tokens": -1}}) == Usage(0, 0, True)
    assert usage_of({"usage": {"prompt_tokens": "3"}}) is None
    assert usage_of({"usage": None}) is None
    assert usage_of([]) is None


def _sse(*events: object) -> bytes:
    return (
        b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    )


_STREAM_WITH_USAGE = _sse(
    {"choices": [{"delta": {"content": 'say "usage": {"prompt_tokens": 999}'}}], "usage": None},
    {"choices": [{"delta": {"content": "more"}}], "usage": None},
    {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}},
)


def _through(events: SseFilter, stream: bytes, cuts: list[int]) -> bytes:
    bounds = [0, *sorted(cuts), len(stream)]
    relayed = b"".join(events.take(stream[start:end]) for start, end in pairwise(bounds))
    return relayed + events.end()


@given(cuts=st.lists(st.integers(min_value=0, max_value=len(_STREAM_WITH_USAGE)), max_size=12))
def test_the_final_usage_is_found_however_the_stream_is_split(cuts: list[int]) -> None:
    events = SseFilter()
    assert _through(events, _STREAM_WITH_USAGE, cuts) == _STREAM_WITH_USAGE  # nothing lost
    assert events.usage == Usage(12, 4, True)


@given(cuts=st.lists(st.integers(min_value=0, max_value=len(_STREAM_WITH_USAGE)), max_size=12))
def test_whole_events_only_reach_the_client(cuts: list[int]) -> None:
    events = SseFilter()
    bounds = [0, *sorted(cuts), len(_STREAM_WITH_USAGE)]
    for start, end in pairwise(bounds):
        relayed = events.take(_STREAM_WITH_USAGE[start:end])
        assert relayed == b"" or relayed.endswith(b"\n\n"), relayed


@given(cuts=st.lists(st.integers(min_value=0, max_value=len(_STREAM_WITH_USAGE)), max_size=12))
def test_a_client_that_did_not_ask_gets_no_usage_event(cuts: list[int]) -> None:
    events = SseFilter(strip_usage=True)
    relayed = _through(events, _STREAM_WITH_USAGE, cuts)
    assert events.usage == Usage(12, 4, True)  # read before it was dropped
    assert b'"prompt_tokens": 12' not in relayed
    assert relayed.endswith(b"data: [DONE]\n\n")
    assert relayed.count(b"data: ") == 3  # two content events and [DONE]


def test_a_usage_event_the_upstream_did_not_end_is_still_read() -> None:
    events = SseFilter()
    last = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}\n'
    assert events.take(last) == b""  # not a whole event: held
    assert events.end() == last
    assert events.usage == Usage(5, 7, True)


def test_streams_without_usage_report_none() -> None:
    events = SseFilter()
    stream = _sse({"choices": [{"delta": {"content": "hi"}}], "usage": None})
    assert events.take(stream) == stream
    assert events.usage is None
    assert events.pieces == 1


def test_an_unended_usage_event_is_dropped_for_a_client_that_did_not_ask() -> None:
    events = SseFilter(strip_usage=True)
    content = b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
    last = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}\n'
    assert events.take(content + last) == content
    assert events.end() == b""
    assert events.usage == Usage(5, 7, True)


def test_a_usage_event_the_gateway_cannot_bill_is_still_dropped_for_a_client_that_did_not_ask():
    """A provider's usage in other fields is no usage to bill, but its ``choices: []`` event
    would still break a client that reads ``choices[0]`` of every chunk."""
    content = b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
    odd = b'data: {"choices":[],"usage":{"input_tokens":3,"output_tokens":1}}\n\n'
    done = b"data: [DONE]\n\n"
    events = SseFilter(strip_usage=True)
    assert events.take(content + odd + done) == content + done
    assert events.usage is None
    kept = SseFilter()
    assert kept.take(content + odd + done) == content + odd + done
