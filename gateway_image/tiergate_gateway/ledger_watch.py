"""The SpendReports and ApiKeyTiers of the gateway's namespace, watched into ``DurableSpend``.

Two list-and-watches (``sources.list_watch``: resume, relist on 410 Gone, backoff); every
change refreshes the tiers' floors. Needs ``list`` and ``watch`` on ``spendreports`` and
``apikeytiers`` (group ``tiergate.dev``) in the namespace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .durable import DurableSpend
from .sources.kubeconfig import KubeAccess
from .sources.list_watch import ListWatch

__all__ = ["LedgerWatch"]

_log = logging.getLogger("tiergate_gateway.ledger")
_API = "/apis/tiergate.dev/v1alpha1/namespaces"


class LedgerWatch:
    def __init__(
        self,
        namespace: str,
        durable: DurableSpend,
        access: Callable[[], KubeAccess],
        *,
        backoff: tuple[float, float] = (0.1, 10.0),
    ) -> None:
        self.reports = ListWatch(
            f"spendreports in {namespace}",
            f"{_API}/{namespace}/spendreports",
            access,
            on_listed=durable.reports_listed,
            on_event=durable.report_changed,
            backoff=backoff,
            log=_log,
        )
        self.tiers = ListWatch(
            f"apikeytiers in {namespace}",
            f"{_API}/{namespace}/apikeytiers",
            access,
            on_listed=durable.tiers_listed,
            on_event=durable.tier_changed,
            backoff=backoff,
            log=_log,
        )

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
