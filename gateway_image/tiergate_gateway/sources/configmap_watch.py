"""One ConfigMap watched through the Kubernetes API.

List once, then watch ``/api/v1/namespaces/<ns>/configmaps`` with a field selector on the
name (``list_watch.ListWatch``: resumes from the last resourceVersion, lists again only on
410 Gone, backs off with jitter). Each ADDED/MODIFIED event offers ``config.json`` (inline
``data``, or gzip ``binaryData`` for large configs, see ``contract.configmap_payload``) to
the store the moment its line arrives: on the local control plane a new config serves a
few milliseconds after the write (``bench/gateway/configmap_latency.py``). An unchanged
``config.json`` (a relist) is not parsed again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from tiergate_contract import CONFIG_GZIP_KEY, CONFIG_KEY, config_from_configmap

from .kubeconfig import KubeAccess
from .list_watch import ListWatch

__all__ = ["KubeSource", "Offer"]

_log = logging.getLogger(__name__)
Offer = Callable[[bytes, str], bool]


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
        self.namespace, self._name = configmap.split("/", 1)
        self._offer = offer
        self._source = f"configmap {configmap}"
        self._offered: bytes | None = None  # the last config.json offered
        self._watch = ListWatch(
            self._source,
            f"/api/v1/namespaces/{self.namespace}/configmaps",
            access,
            on_listed=self._listed,
            on_event=self._event,
            params={"fieldSelector": f"metadata.name={self._name}"},
            backoff=backoff,
            read_timeout=read_timeout,
            watch_seconds=watch_seconds,
        )
        self.first_sync = self._watch.first_sync

    @property
    def lists(self) -> int:
        return self._watch.lists

    @property
    def watches(self) -> int:
        return self._watch.watches

    @property
    def events(self) -> int:
        return self._watch.events

    def _listed(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self._handle(item)
        if not items:
            _log.warning("%s does not exist yet", self._source)

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            _log.warning("%s was deleted; the last config keeps serving", self._source)
        else:
            self._handle(obj)

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
        await self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()
