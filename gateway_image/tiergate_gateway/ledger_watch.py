"""The SpendReports and ApiKeyTiers of the gateway's namespace, watched into ``DurableSpend``.

Two list-and-watches (``sources.list_watch``: resume, relist on 410 Gone, backoff); every
change refreshes the tiers' floors. Needs ``list`` and ``watch`` on ``spendreports`` and
``apikeytiers`` (group ``tiergate.dev``) in the namespace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .durable import DurableSpend
from .sources.kubeconfig import KubeAccess
from .sources.list_watch import ListWatch

__all__ = ["LedgerWatch"]

_log = logging.getLogger("tiergate_gateway.ledger")
_API = "/apis/tiergate.dev/v1alpha1/namespaces"
_OnListed = Callable[[list[dict[str, Any]]], None]
_OnEvent = Callable[[str, dict[str, Any]], None]


class LedgerWatch:
    def __init__(
        self,
        namespace: str,
        durable: DurableSpend,
        access: Callable[[], KubeAccess],
        *,
        backoff: tuple[float, float] = (0.1, 10.0),
    ) -> None:
        def watch(resource: str, on_listed: _OnListed, on_event: _OnEvent) -> ListWatch:
            return ListWatch(
                f"{resource} in {namespace}",
                f"{_API}/{namespace}/{resource}",
                access,
                on_listed=on_listed,
                on_event=on_event,
                backoff=backoff,
                log=_log,
            )

        self.reports = watch("spendreports", durable.reports_listed, durable.report_changed)
        self.tiers = watch("apikeytiers", durable.tiers_listed, durable.tier_changed)

    async def start(self, wait_seconds: float = 10.0) -> None:
        """Start both; return once both have listed (the floors are known), or after
        ``wait_seconds`` (the API is slow: serve, and count the durable spend once it comes)."""
        await asyncio.gather(self.reports.start(wait_seconds), self.tiers.start(wait_seconds))
        if not (self.reports.first_sync.is_set() and self.tiers.first_sync.is_set()):
            _log.error(
                "the spend ledger could not be read within %.0fs: admitting against this"
                " gateway's own spend until it can",
                wait_seconds,
            )

    async def stop(self) -> None:
        await asyncio.gather(self.reports.stop(), self.tiers.stop())
