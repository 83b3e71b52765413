"""Until when an upstream said it cannot take more: its rate-limit headers and Retry-After.

OpenAI-style upstreams send ``x-ratelimit-remaining-{requests,tokens}`` with every answer and
``x-ratelimit-reset-{requests,tokens}`` (durations such as ``1s``, ``6m0s``, ``20ms``); a
429 or 503 may carry ``Retry-After`` (seconds). Routing sends a target that reported
exhaustion last, until the time given here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["exhausted_for"]

# What a target is avoided for when it says "0 left" without saying for how long, and the
# longest any header may keep it aside (a provider's "reset in 6 hours" must not strand it).
_DEFAULT_SECONDS = 1.0
_MAX_SECONDS = 60.0
_DURATION = re.compile(
    r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?"
)


_HEADERS = (
    ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
)


def _duration(text: str) -> float | None:
    """``"6m0s"`` -> 360.0; ``"20ms"`` -> 0.02; a bare number is seconds; None if unreadable."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    match = _DURATION.fullmatch(text)
    if not match or not any(match.groups()):
        return None
    hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def exhausted_for(status: int, headers: Mapping[str, str]) -> float:
    """Seconds the upstream asked to be left alone (0: it did not)."""
    wait = 0.0
    for remaining_header, reset_header in _HEADERS:
        remaining = headers.get(remaining_header)
        if remaining is not None and remaining.strip() in ("0", "0.0"):
            reset = _duration(headers.get(reset_header, ""))
            wait = max(wait, _DEFAULT_SECONDS if reset is None else reset)
    if status in (429, 503):
        retry_after = _duration(headers.get("retry-after", ""))
        wait = max(wait, _DEFAULT_SECONDS if retry_after is None else retry_after)
    return min(wait, _MAX_SECONDS)
