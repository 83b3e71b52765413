"""Token usage an upstream reports: in a JSON answer, or in the last chunks of an SSE stream."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

__all__ = ["SseUsageScanner", "Usage", "usage_of"]


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    reported: bool  # False: counted by the gateway (e.g. chunks of a stream without usage)


def usage_of(data: object) -> Usage | None:
    """The ``usage`` of a decoded OpenAI answer, if it has a well-formed one."""
    if not isinstance(data, dict):
        return None
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    # Conditionals, not ``max(0, n)``: a builtin call costs more (this runs for every answer).
    return Usage(prompt if prompt > 0 else 0, completion if completion > 0 else 0, True)


class SseUsageScanner:
    """Finds the last ``usage`` object in an SSE stream without buffering the stream.

    Only the last complete line naming ``"usage"`` in each piece is parsed: OpenAI sends
    ``"usage":null`` in every chunk and the totals in the last one, and a ``"usage"`` inside
    generated text is escaped (``\\"usage\\"``), so it never matches.
    """

    __slots__ = ("carry", "parsed", "usage")

    def __init__(self) -> None:
        self.carry = b""
        self.usage: Usage | None = None
        # The last line parsed and what it decoded to (the relay reuses it rather than
        # parsing the same usage event again).
        self.parsed: tuple[bytes, object] | None = None

    def feed(self, chunk: bytes) -> None:
        data = self.carry + chunk if self.carry else chunk
        cut = data.rfind(b"\n")
        self.carry = data[cut + 1 :] if cut >= 0 else data
        if len(self.carry) > 65536:
            self.carry = b""
        at = data.rfind(b'"usage"', 0, cut)
        if at < 0:
            return
        line = data[data.rfind(b"\n", 0, at) + 1 : data.find(b"\n", at)]
        if not line.startswith(b"data:"):
            return
        try:
            decoded = orjson.loads(line[5:])
        except orjson.JSONDecodeError:
            return
        self.parsed = (line, decoded)
        found = usage_of(decoded)
        if found is not None:
            self.usage = found
