"""List, then watch, one collection of the Kubernetes API, resuming after breaks.

``ListWatch`` lists the collection once (``on_listed`` gets every item: the whole state),
then watches it from the list's resourceVersion (``on_event`` gets each ADDED, MODIFIED and
DELETED object the moment its line arrives).

The watch keeps the last resourceVersion it saw (events and bookmarks) and, when the server
ends it (``timeoutSeconds``, a read timeout, a dropped connection), resumes from there
without listing again; only HTTP 410 Gone (the version was compacted away) lists again.
Failed attempts back off exponentially with jitter (0.1 s doubling to 10 s); a watch that
delivered anything resets the backoff, so one bad spell never slows later updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from .event_lines import event_lines
from .kubeconfig import KubeAccess

if TYPE_CHECKING:
    import aiohttp

__all__ = ["ListWatch", "describe", "status_message"]

_log = logging.getLogger(__name__)


class _Gone(Exception):
    """The watch's resourceVersion is gone (HTTP 410): list again."""


class ListWatch:
    """Lists and watches ``path`` (with ``params``, e.g. a selector); see the module docstring.

    ``lists``, ``watches`` and ``events`` count list requests, watch connections and watch
    events handled (bookmarks included), for tests and benchmarks. A callback that raises is
    logged and the watch goes on.
    """

    def __init__(
        self,
        what: str,
        path: str,
        access: Callable[[], KubeAccess],
        *,
        on_listed: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        params: Mapping[str, str] | None = None,
        backoff: tuple[float, float] = (0.1, 10.0),
        read_timeout: float = 150.0,
        watch_seconds: tuple[int, int] = (300, 600),
        log: logging.Logger = _log,
    ) -> None:
        self.what = what
        self._log = log
        self._path = path
        self._access = access
        self._on_listed = on_listed
        self._on_event = on_event
        self._params = dict(params or {})
        self._backoff = backoff
        # The server sends a bookmark about once a minute; silence for longer than this means
        # a dead connection, so reconnect (resuming from the last resourceVersion).
        self._read_timeout = read_timeout
        self._watch_seconds = watch_seconds
        self._task: asyncio.Task[None] | None = None
        self.first_sync = asyncio.Event()
        self._version: str | None = None  # resume the watch here; None: list first
        self._progress = 0  # bumped by every event and every watch that stayed open
        self.lists = 0
        self.watches = 0
        self.events = 0

    async def start(self, wait_seconds: float = 10.0) -> None:
        """Start watching; return once the first list is in (or after ``wait_seconds``)."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.first_sync.wait(), wait_seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        first, ceiling = self._backoff
        delay = first
        gone_before = False
        while True:
            progress = self._progress
            problem: Exception | None = None
            gone = False
            try:
                await self._connect()
            except asyncio.CancelledError:
                raise
            except _Gone as exc:
                self._log.info("%s: resourceVersion expired (%s); listing again", self.what, exc)
                self._version, gone = None, True
            except Exception as exc:
                problem = exc
            if self._progress != progress:
                # The watch worked for a while: resume at once, from the last resourceVersion.
                if problem is not None:
                    self._log.info("watch of %s ended (%s); resuming", self.what, describe(problem))
                delay, gone_before = first, False
                continue
            if gone and not gone_before:
                gone_before = True
                continue  # list again right away, once
            gone_before = gone
            pause = delay * random.uniform(0.5, 1.0)
            self._log.warning(
                "watching %s failed, retrying in %.1fs: %s",
                self.what,
                pause,
                describe(problem)
                if problem is not None
                else "resourceVersion expired again"
                if gone
                else "the watch ended at once",
            )
            await asyncio.sleep(pause)
            delay = min(delay * 2, ceiling)

    async def _connect(self) -> None:
        """One connection: list if there is no resourceVersion to resume from, then watch."""
        import aiohttp  # imported on use: it costs ~0.25 s of start-up for file-based gateways

        access = self._access()  # every time: a service account token file rotates
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self._read_timeout)
        async with aiohttp.ClientSession(headers=access.headers, timeout=timeout) as session:
            url = access.server + self._path
            if self._version is None:
                await self._list(session, url, access.ssl)
            await self._watch(session, url, access.ssl)

    async def _list(
        self, session: aiohttp.ClientSession, url: str, tls: ssl.SSLContext | bool
    ) -> None:
        async with session.get(url, params=self._params, ssl=tls) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"list returned HTTP {resp.status}: {status_message(body)}")
        listing = orjson.loads(body)
        self.lists += 1
        try:
            self._on_listed(list(listing.get("items") or []))
        except Exception:  # a bug in a handler must not stop the watch
            self._log.exception("handling the list of %s failed", self.what)
        self._version = str(listing["metadata"]["resourceVersion"])
        self.first_sync.set()

    async def _watch(
        self, session: aiohttp.ClientSession, url: str, tls: ssl.SSLContext | bool
    ) -> None:
        low, high = self._watch_seconds
        params = {
            **self._params,
            "watch": "1",
            "resourceVersion": self._version or "",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(random.randint(low, high)),
        }
        async with session.get(url, params=params, ssl=tls) as resp:
            if resp.status != 200:
                message = status_message(await resp.read())
                if resp.status == 410:
                    raise _Gone(message)
                raise RuntimeError(f"watch returned HTTP {resp.status}: {message}")
            self.watches += 1
            opened = time.monotonic()
            try:
                async with contextlib.aclosing(event_lines(resp.content)) as lines:
                    async for line in lines:
                        self._event(orjson.loads(line))
            finally:
                if time.monotonic() - opened >= 1.0:
                    self._progress += 1

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj: dict[str, Any] = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone(str(obj.get("message", "")))
            raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            try:
                self._on_event(str(kind), obj)
            except Exception:  # a bug in a handler must not stop the watch
                self._log.exception("handling a watch event of %s failed", self.what)
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self._version = str(version)
        self.events += 1
        self._progress += 1


def describe(exc: BaseException) -> str:
    """A short, credential-free description of a failure (no headers, no bodies)."""
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def status_message(body: bytes) -> str:
    """The ``message`` of a Kubernetes Status body, else the first bytes of the body."""
    with contextlib.suppress(ValueError, AttributeError):
        return str(orjson.loads(body).get("message", ""))[:300]
    return body[:300].decode(errors="replace")
