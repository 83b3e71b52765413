"""Process-wide settings of a gateway process: its open-file limit and its cyclic collector.

Called by the entry points (``run`` and a master's workers), not by ``serve``: a gateway
served inside another program (the tests) leaves that program's process as it is.
"""

from __future__ import annotations

import gc
import logging
import resource

__all__ = [
    "COLLECTOR_THRESHOLDS",
    "FILES_PER_CONNECTION",
    "FILES_SPARE",
    "files_needed",
    "raise_open_file_limit",
    "settle_collector",
    "tune_collector",
]

_log = logging.getLogger("tiergate_gateway")

# A client connection with a call in flight holds two descriptors: its own and its upstream's.
FILES_PER_CONNECTION = 2
# The listening socket, the event loop's, logs, the config watch, Redis, idle pooled
# upstream connections (at most 256 per upstream host).
FILES_SPARE = 64 + 256
# gc.set_threshold: a young collection after 2,000 allocations (CPython: 700), a middle one
# every 5 young ones (10), a full one every 100 middle ones (10): 1,000,000 allocations
# apart instead of 70,000.
COLLECTOR_THRESHOLDS = (2000, 5, 100)


def files_needed(max_connections: int) -> int:
    """Descriptors ``max_connections`` busy client connections may hold at once."""
    return max_connections * FILES_PER_CONNECTION + FILES_SPARE


def raise_open_file_limit(max_connections: int) -> int:
    """Raise the soft open-file limit to the hard one; the soft limit it leaves.

    Container runtimes and systemd often start processes at a soft limit of 1,024 with a far
    higher hard one, which an unprivileged process may raise itself to. A hard limit too low
    for ``max_connections`` busy connections is logged: past it, accepting a connection or
    connecting upstream fails (resets and 502s) before the connection cap answers 503.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = (
            hard if hard != resource.RLIM_INFINITY else max(soft, files_needed(max_connections))
        )
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as exc:
            _log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    needed = files_needed(max_connections)
    if soft != resource.RLIM_INFINITY and soft < needed:
        _log.warning(
            "the open-file limit (%d) is below the %d that --max-connections %d busy "
            "connections may need (%d each, plus %d): raise the hard limit (ulimit -n, "
            "LimitNOFILE, the container runtime's nofile) or lower --max-connections to %d",
            soft,
            needed,
            max_connections,
            FILES_PER_CONNECTION,
            FILES_SPARE,
            max(1, (soft - FILES_SPARE) // FILES_PER_CONNECTION),
        )
    return int(soft)


def tune_collector() -> None:
    """Collections sized for thousands of open streams: young ones about three times rarer,
    full ones about fourteen times (every ``COLLECTOR_THRESHOLDS`` product of allocations).

    A full collection walks every object alive: with thousands of streams open that held the
    event loop (every stream) for 0.2-0.4 s, several times a minute while streams were
    starting. A call leaves no reference cycle behind when it ends (the server and the
    upstream client break theirs at close, see ``tests/gateway/test_collector.py``), so its
    objects are freed by reference counting and young collections find what little else
    forms cycles. A young collection walks what was allocated since the last one and is still
    alive, which with thousands of streams is mostly each stream's objects of the moment (its
    chunk's coroutine and future): collecting after 2,000 allocations instead of 700 walks
    them a third as often (bench/streams/README.md has the pauses, before and after).
    """
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


def settle_collector() -> None:
    """After start-up (modules imported, config loaded): collect once, then move what is
    alive into the permanent generation, which collections no longer walk."""
    gc.collect()
    gc.freeze()
