"""Request identity across hops: ``x-request-id`` (kept or made) and W3C trace context.

The client's ``x-request-id`` is kept when it is a plain token, else one is made; it goes
upstream, back to the client and into the access log. ``traceparent`` (and its
``tracestate``) pass through to the upstream unchanged when well-formed, and are dropped
otherwise, so nothing a client sends reaches an upstream's header block unchecked.
"""

from __future__ import annotations

import itertools
import os
import re

__all__ = ["trace_of"]

# Made ids: 16 random hex digits per process, then a counter (unique without a syscall and
# a hex encoding per request, unlike ``os.urandom`` each time). Reset in a forked child.
# The counter's last 3 hex digits come from a table and the rest is formatted once per 4,096
# ids: formatting a number costs about 1,000 instructions per request on Python 3.11.
_PROCESS = os.urandom(8).hex()
_NEXT = itertools.count(1)
_LOW_BITS = 12
_LOW = [format(low, "03x") for low in range(1 << _LOW_BITS)]
_LOW_LINES = [b"%03x\r\n" % low for low in range(1 << _LOW_BITS)]


def _high(high: int) -> tuple[int, str, bytes]:
    """The counter's leading digits ``high``: the id's start, and its header line's."""
    start = _PROCESS + format(high, "013x")
    return high, start, b"x-request-id: " + start.encode()


_current = _high(0)


def _renew_after_fork() -> None:
    global _PROCESS, _NEXT, _current
    _PROCESS, _NEXT = os.urandom(8).hex(), itertools.count(1)
    _current = _high(0)


os.register_at_fork(after_in_child=_renew_after_fork)

# Visible ASCII without separators that would need quoting: UUIDs, ULIDs, "req_..." ids.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
# https://www.w3.org/TR/trace-context/#traceparent-header (version 00 and later versions'
# first four fields); the all-zero trace and parent ids are invalid.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_TRACESTATE = re.compile(r"[\x20-\x7e]{1,512}")


def trace_of(headers: dict[str, str]) -> tuple[str, bytes]:
    """The call's request id (the client's ``x-request-id`` if it is a plain token, else a new
    one) and the header lines (each ending in CRLF) carrying it and the trace context upstream."""
    global _current
    request_id = headers.get("x-request-id")
    if request_id is None or not _REQUEST_ID.fullmatch(request_id):
        number = next(_NEXT)
        if number >> _LOW_BITS != _current[0]:
            _current = _high(number >> _LOW_BITS)
        low = number & 0xFFF
        request_id = _current[1] + _LOW[low]  # _PROCESS + format(number, "016x")
        lines = _current[2] + _LOW_LINES[low]
    else:
        lines = b"x-request-id: " + request_id.encode() + b"\r\n"
    traceparent = headers.get("traceparent")
    if traceparent is not None and _TRACEPARENT.fullmatch(traceparent.strip()):
        lines += b"traceparent: %s\r\n" % traceparent.strip().encode()
        tracestate = headers.get("tracestate")
        if tracestate is not None and _TRACESTATE.fullmatch(tracestate):
            lines += b"tracestate: %s\r\n" % tracestate.encode()
    return request_id, lines
