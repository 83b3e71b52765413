"""One ConfigMap watched through the Kubernetes API.

List once, then watch ``/api/v1/namespaces/<ns>/configmaps`` with a field selector
on the name. Each ADDED/MODIFIED event offers ``config.json`` (inline ``data``, or
gzip ``binaryData`` for large configs, see ``contract.configmap_payload``) to the
store the moment its line arrives: on the local control plane a new config serves
a few milliseconds after the write (``bench/gateway/configmap_latency.py``).

The watch keeps the last resourceVersion it saw (events and bookmarks) and,
when the server ends it (``timeoutSeconds``, a read timeout, a dropped
connection), resumes from there without listing again; only HTTP 410 Gone (the
version was compacted away) lists again. Failed attempts back off exponentially
with jitter (0.1 s doubling to 10 s); a watch that delivered anything resets
the backoff, so one bad spell never slows later updates. An unchanged
``config.json`` (a relist) is not parsed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from tiergate_contract import CONFIG_GZIP_KEY, CONFIG_KEY, config_from_configmap

from .event_lines import event_lines
from .kubeconfig import KubeAccess

if TYPE_CHECKING:
    import aiohttp

__all__ = ["KubeSource", "Offer"]

_log = logging.getLogger(__name__)
Offer = Callable[[bytes, str], bool]


class _Gone(Exception):
    """The watch's resourceVersion is gone (HTTP 410): list again."""


class KubeSource:
    """Watches ``namespace/name`` and offers its ``config.json`` on every change.

    ``lists``, ``watches`` and ``events`` count list requests, watch connections and
    watch events handled (bookmarks included), for tests and benchmarks.
    """

    def __init__(
        self,
        configmap: str,
        offer: Offer,
        access: Callable[[], KubeAccess],
        *,
        backoff: tuple[float, float] = (0.1, 10.0),
        read_timeout: float = 150.0,
        watch_seconds: tuple[int, int] = (300, 600),
    ) -> None:
        self._namespace, self._name = configmap.split("/", 1)
        self._offer = offer
        self._access = access
        self._backoff = backoff
        # The server sends a bookmark about once a minute; silence for longer than this means
        # a dead connection, so reconnect (resuming from the last resourceVersion).
        self._read_timeout = read_timeout
        self._watch_seconds = watch_seconds
        self._task: asyncio.Task[None] | None = None
        self.first_sync = asyncio.Event()
        self._source = f"configmap {configmap}"
        self._path = f"/api/v1/namespaces/{self._namespace}/configmaps"
        self._selector = f"metadata.name={self._name}"
        self._version: str | None = None  # resume the watch here; None: list first
        self._offered: bytes | None = None  # the last config.json offered
        self._progress = 0  # bumped by every event and every watch that stayed open
        self.lists = 0
        self.watches = 0
        self.events = 0

    def _handle(self, obj: dict[str, Any]) -> None:
        data = config_from_configmap(obj)
        if data is None:
            _log.error("%s has neither %s nor %s", self._source, CONFIG_KEY, CONFIG_GZIP_KEY)
            data = b""
        if data == self._offered:
            return  # a relist, or a change elsewhere in the object: the store has seen these bytes
        self._offered = data
        try:
            self._offer(data, self._source)
        except Exception:  # a bug in the store must not stop the watch; the last config serves
            _log.exception("offering the config from %s failed", self._source)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.first_sync.wait(), 10)

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
                _log.info("%s: resourceVersion expired (%s); listing again", self._source, exc)
                self._version, gone = None, True
            except Exception as exc:
                problem = exc
            if self._progress != progress:
                # The watch worked for a while: resume at once, from the last resourceVersion.
                if problem is not None:
                    _log.info("watch of %s ended (%s); resuming", self._source, _describe(problem))
                delay, gone_before = first, False
                continue
            if gone and not gone_before:
                gone_before = True
                continue  # list again right away, once
            gone_before = gone
            pause = delay * random.uniform(0.5, 1.0)
            _log.warning(
                "watching %s failed, retrying in %.1fs: %s",
                self._source,
                pause,
                _describe(problem)
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
        params = {"fieldSelector": self._selector}
        async with session.get(url, params=params, ssl=tls) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"list returned HTTP {resp.status}: {_status_message(body)}")
        listing = orjson.loads(body)
        self.lists += 1
        items = listing.get("items") or []
        for item in items:
            self._handle(item)
        if not items:
            _log.warning("%s does not exist yet", self._source)
        self._version = str(listing["metadata"]["resourceVersion"])
        self.first_sync.set()

    async def _watch(
        self, session: aiohttp.ClientSession, url: str, tls: ssl.SSLContext | bool
    ) -> None:
        low, high = self._watch_seconds
        params = {
            "fieldSelector": self._selector,
            "watch": "1",
            "resourceVersion": self._version or "",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(random.randint(low, high)),
        }
        async with session.get(url, params=params, ssl=tls) as resp:
            if resp.status != 200:
                message = _status_message(await resp.read())
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
        if kind in ("ADDED", "MODIFIED"):
            self._handle(obj)
        elif kind == "DELETED":
            _log.warning("%s was deleted; the last config keeps serving", self._source)
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self._version = str(version)
        self.events += 1
        self._progress += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _describe(exc: BaseException) -> str:
    """A short, credential-free description of a failure (no headers, no bodies)."""
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _status_message(body: bytes) -> str:
    """The ``message`` of a Kubernetes Status body, else the first bytes of the body."""
    with contextlib.suppress(ValueError, AttributeError):
        return str(orjson.loads(body).get("message", ""))[:300]
    return body[:300].decode(errors="replace")
