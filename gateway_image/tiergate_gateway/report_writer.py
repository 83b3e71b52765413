"""This process's SpendReport: created at start, updated while there is news, final at exit.

The report (``docs/ledger.md``) is named ``<pod>-<8 random hex>``, labelled with the
gateway, and carries the finalizer ``tiergate.dev/ledger`` (only the operator removes it,
after folding the report's money). It is updated with optimistic concurrency (PUT with the
resourceVersion of its last write) every ``interval`` seconds when the spend or the
reservations changed, at least every ``heartbeat`` seconds, and once more with ``final``
when the gateway exits (after its in-flight calls).

When an update fails because the report is terminating (the operator folded it: its money
is frozen at this process's last successful write) or gone (404), a new report is started
holding only what was settled since then: what the old report holds becomes the ``base``
the new one is counted from, so every nano-USD is reported exactly once.

Needs ``create``, ``get`` and ``update`` on ``spendreports`` in the namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from tiergate_contract.ledger import LEDGER_FINALIZER, MAX_REPORT_MONTHS, SpendReportSpec

from .sources.kubeconfig import KubeAccess
from .sources.list_watch import describe, status_message
from .spend import Snapshot, SpendRecorder, add_snapshots, month_totals, report_tiers, snapshot_of

if TYPE_CHECKING:
    import aiohttp

__all__ = ["SpendReporter", "pod_name", "report_name"]

_log = logging.getLogger("tiergate_gateway.ledger")
_API = "/apis/tiergate.dev/v1alpha1/namespaces"
_GATEWAY_LABEL = "tiergate.dev/gateway"
_MANAGED_BY = {"app.kubernetes.io/managed-by": "tiergate"}
_NOT_NAME = re.compile(r"[^a-z0-9.-]+")


def pod_name() -> str:
    """This pod's name: ``POD_NAME`` (the downward API), else ``HOSTNAME``, else the host's."""
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()


def report_name(pod: str) -> str:
    """``<pod>-<8 random hex>``: a valid object name, new for every report."""
    stem = _NOT_NAME.sub("-", pod.lower())[:244].strip("-.") or "gateway"
    return f"{stem}-{secrets.token_hex(4)}"


def _label_value(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return value.strip("-._")


class _Conflict(Exception):
    """The report changed under us: read it and decide (resume, or start a new one)."""


class SpendReporter:
    """See the module docstring. ``name`` is the current report's (None before the first)."""

    def __init__(
        self,
        namespace: str,
        pod: str,
        gateway: Callable[[], str | None],
        recorder: SpendRecorder,
        access: Callable[[], KubeAccess],
        *,
        interval: float = 5.0,
        heartbeat: float = 60.0,
        request_timeout: float = 5.0,
        on_new_report: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._namespace = namespace
        self._pod = pod
        self._gateway = gateway
        self._recorder = recorder
        self._access = access
        self._interval = interval
        self._heartbeat = heartbeat
        self._request_timeout = request_timeout
        self.on_new_report = on_new_report
        self._clock = clock
        self._started_at = datetime.fromtimestamp(clock(), UTC)
        self._collection = f"{_API}/{namespace}/spendreports"
        self.name: str | None = None
        self._resource_version: str | None = None  # of our last write; None: not created yet
        # What earlier reports of this process hold (the current one counts from here), and
        # the counters as of the last successful write of the current one.
        self.base: Snapshot = {}
        self._written: Snapshot = {}
        self._written_version = -1
        self._written_at = 0.0
        self._written_spec: SpendReportSpec | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self.writes = 0  # successful writes, for tests
        self.reports_started = 0

    def own_base(self, tier: str, month: str) -> tuple[int, int]:
        """(month, lifetime) spend of ``tier`` held by this process's earlier reports."""
        return month_totals(self.base, tier, month)

    # -- lifespan -----------------------------------------------------------
    async def start(self) -> None:
        import aiohttp  # imported on use: file-based gateways never need it

        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._request_timeout)
        )
        self.name = report_name(self._pod)
        await self._try_write(final=False)  # the report exists from the start, if it can
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, final_seconds: float = 5.0) -> None:
        """Stop the periodic writes and write the final report (within ``final_seconds``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            async with asyncio.timeout(final_seconds):
                await self._try_write(final=True)
        except TimeoutError:
            _log.error(
                "the final spend report %s was not written within %.0fs: what was settled"
                " since the last report is lost from the record",
                self.name,
                final_seconds,
            )
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if (
                self._recorder.version != self._written_version
                or self._clock() - self._written_at >= self._heartbeat
            ):
                await self._try_write(final=False)

    async def _try_write(self, final: bool) -> bool:
        try:
            await self.write(final)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.error("writing the spend report %s failed: %s", self.name, describe(exc))
            return False

    # -- writing ------------------------------------------------------------
    async def write(self, final: bool = False) -> None:
        """Write the report (creating or replacing it as needed); raises on failure."""
        gateway = self._gateway()
        if gateway is None:
            return  # no config yet: nothing can have been spent
        for _ in range(4):
            recorder = self._recorder
            version, snapshot = recorder.version, recorder.snapshot()
            if self._months_pending(snapshot) > MAX_REPORT_MONTHS:
                await self._retire(gateway)
                continue
            spec = SpendReportSpec(
                gateway=gateway,
                pod=self._pod,
                started_at=self._started_at,
                reported_at=datetime.fromtimestamp(self._clock(), UTC),
                final=final,
                tiers=report_tiers(snapshot, self.base, recorder.reserved),
            )
            try:
                await self._put(gateway, spec)
            except _Conflict:
                continue
            self._written, self._written_version = snapshot, version
            self._written_at, self._written_spec = self._clock(), spec
            self.writes += 1
            return
        raise RuntimeError("the report kept changing under the gateway")

    def _months_pending(self, snapshot: Snapshot) -> int:
        """The most months one tier of the report would hold: those with calls since
        ``base``. Compared as ``report_tiers`` does, by spend and calls: a last-use moment
        comes back from a written report rounded to the microsecond, so it differs."""
        most = 0
        for tier, months in snapshot.items():
            base = self.base.get(tier, {})
            pending = 0
            for month, (spent, calls, _) in months.items():
                base_spent, base_calls, _ = base.get(month, (0, 0, {}))
                pending += (spent, calls) != (base_spent, base_calls)
            most = max(most, pending)
        return most

    async def _put(self, gateway: str, spec: SpendReportSpec) -> None:
        """One create or update; ``_Conflict`` when the report must be read again first."""
        assert self.name is not None
        body = self._object(gateway, spec)
        if self._resource_version is None:
            status, answer = await self._request("POST", self._collection, body)
            if status == 409:  # a create of ours that got through before: read it
                await self._reread()
                raise _Conflict
        else:
            status, answer = await self._request("PUT", f"{self._collection}/{self.name}", body)
            if status == 404:
                self._new_report(None)
                raise _Conflict
            if status == 409:
                await self._reread()
                raise _Conflict
        if status not in (200, 201):
            raise RuntimeError(f"HTTP {status}: {status_message(answer)}")
        self._resource_version = str(orjson.loads(answer)["metadata"]["resourceVersion"])

    async def _reread(self) -> None:
        """After a conflict: a terminating or gone report is replaced; else resume from its
        resourceVersion (someone else touched it, or an earlier write of ours got through)."""
        assert self.name is not None
        status, answer = await self._request("GET", f"{self._collection}/{self.name}")
        if status == 404:
            self._new_report(None)
            return
        if status != 200:
            raise RuntimeError(f"reading the report: HTTP {status}: {status_message(answer)}")
        obj = orjson.loads(answer)
        metadata = obj.get("metadata") or {}
        if (metadata.get("labels") or {}).get("app.kubernetes.io/managed-by") != "tiergate" or (
            obj.get("spec") or {}
        ).get("pod") != self._pod:
            _log.error("a SpendReport named %s is not this gateway's: taking a new name", self.name)
            self.name, self._resource_version = report_name(self._pod), None
            return
        if metadata.get("deletionTimestamp"):
            self._new_report(SpendReportSpec.model_validate(obj["spec"]))
            return
        self._resource_version = str(metadata["resourceVersion"])

    def _new_report(self, frozen: SpendReportSpec | None) -> None:
        """The current report is closed (``frozen`` holds its money, None: unknown, gone):
        the next report holds only what was settled since."""
        if frozen is not None:
            self.base = add_snapshots(self.base, snapshot_of(frozen))
        else:
            self.base = self._written
        self._written = self.base  # the new report: nothing written yet
        old = self.name
        self.name, self._resource_version = report_name(self._pod), None
        self._written_spec = None
        self.reports_started += 1
        _log.info("spend report %s was closed; reporting in %s from now on", old, self.name)
        self.on_new_report()

    async def _retire(self, gateway: str) -> None:
        """A process alive for a year: its report is marked final as last written, and a new
        one takes over (a report holds at most MAX_REPORT_MONTHS months)."""
        spec = self._written_spec
        if spec is None or self._resource_version is None:
            self._new_report(None)
            return
        closing = spec.model_copy(update={"final": True})
        status, answer = await self._request(
            "PUT", f"{self._collection}/{self.name}", self._object(gateway, closing)
        )
        if status == 409:
            await self._reread()
            return
        if status == 404:
            self._new_report(None)
            return
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {status_message(answer)}")
        self._new_report(closing)

    def _object(self, gateway: str, spec: SpendReportSpec) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": self._namespace,
            "labels": {**_MANAGED_BY, _GATEWAY_LABEL: _label_value(gateway)},
            "finalizers": [LEDGER_FINALIZER],
        }
        if self._resource_version is not None:
            metadata["resourceVersion"] = self._resource_version
        return {
            "apiVersion": "tiergate.dev/v1alpha1",
            "kind": "SpendReport",
            "metadata": metadata,
            "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        }

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, bytes]:
        assert self._session is not None
        access = self._access()  # every time: a service account token file rotates
        headers = {**access.headers, "Content-Type": "application/json"}
        async with self._session.request(
            method,
            access.server + path,
            data=orjson.dumps(body) if body is not None else None,
            headers=headers,
            ssl=access.ssl,
        ) as resp:
            return resp.status, await resp.read()
