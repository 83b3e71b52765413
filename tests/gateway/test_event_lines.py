"""Cutting a watch stream into event lines, of any size up to the limit."""

from __future__ import annotations

import pytest

from tiergate_gateway.sources.event_lines import MAX_EVENT_BYTES, event_lines


class Chunks:
    """A stream that returns the given chunks from ``readany``, then EOF."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)

    async def readany(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


async def lines_of(*chunks: bytes, limit: int = MAX_EVENT_BYTES) -> list[bytes]:
    return [line async for line in event_lines(Chunks(*chunks), limit)]


async def test_lines_sharing_a_chunk_or_split_across_chunks_come_out_whole() -> None:
    assert await lines_of(b'{"a":1}\n{"b"', b":2}\n\n  \n", b'{"c"', b":3}") == [
        b'{"a":1}',
        b'{"b":2}',
        b'{"c":3}',  # the last line needs no newline
    ]


async def test_a_line_of_several_mib_in_small_chunks_is_one_line() -> None:
    big = b"x" * (3 * 1024 * 1024)
    chunks = [big[i : i + 65536] for i in range(0, len(big), 65536)]
    assert await lines_of(*chunks, b"\nnext\n") == [big, b"next"]


async def test_a_line_over_the_limit_is_an_error() -> None:
    assert await lines_of(b"x" * 100 + b"\n", limit=100) == [b"x" * 100]
    with pytest.raises(ValueError, match="larger than 100 bytes"):
        await lines_of(b"x" * 60, b"x" * 41, b"\n", limit=100)
