"""Usage reported by upstreams: JSON answers and SSE streams however they are split."""

from __future__ import annotations

import json
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from tiergate_gateway.usage import SseUsageScanner, Usage, usage_of


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


@given(cuts=st.lists(st.integers(min_value=0, max_value=len(_STREAM_WITH_USAGE)), max_size=12))
def test_usage_scanner_finds_the_final_usage_however_the_stream_is_split(cuts: list[int]) -> None:
    scanner = SseUsageScanner()
    bounds = [0, *sorted(cuts), len(_STREAM_WITH_USAGE)]
    for start, end in pairwise(bounds):
        scanner.feed(_STREAM_WITH_USAGE[start:end])
    assert scanner.usage == Usage(12, 4, True)


def test_usage_scanner_ignores_streams_without_usage() -> None:
    scanner = SseUsageScanner()
    scanner.feed(_sse({"choices": [{"delta": {"content": "hi"}}], "usage": None}))
    assert scanner.usage is None
