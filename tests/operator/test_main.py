"""The operator's entry point: kopf's watch stream refusing to close at exit is one warning
line, not an ERROR with a traceback; every other loop error still reaches asyncio's handler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from tiergate_operator.__main__ import _quiet_watch_finalization


async def infinite_watch() -> AsyncIterator[int]:  # named like kopf's generator
    yield 1


async def other_stream() -> AsyncIterator[int]:
    yield 1


def test_a_watch_stream_closing_at_exit_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    seen: list[dict[str, object]] = []
    loop.default_exception_handler = seen.append  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.WARNING):
            _quiet_watch_finalization(
                loop,
                {
                    "message": "an error occurred during closing of asynchronous generator",
                    "exception": RuntimeError("generator didn't stop after athrow()"),
                    "asyncgen": infinite_watch(),
                },
            )
            other = {
                "message": "an error occurred during closing of asynchronous generator",
                "exception": RuntimeError("boom"),
                "asyncgen": other_stream(),
            }
            _quiet_watch_finalization(loop, other)
    finally:
        loop.close()
    assert "a kopf watch stream was still closing at exit" in caplog.text
    assert "Traceback" not in caplog.text
    assert seen == [other]  # anything else still goes to asyncio's default handler
