"""Token usage an upstream reports (in a JSON answer, or in an SSE stream's last event: ``sse``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Usage", "usage_of"]


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
