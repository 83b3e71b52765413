"""The SpendReport writer against the real kube-apiserver (``docs/ledger.md``):

- the heartbeat: a report with no news is rewritten every ``heartbeat`` seconds (here 1 s;
  60 s by default), only its ``reportedAt`` moving;
- the rotation: the API refuses a report of thirteen months (the CRD's bound), and a writer
  whose process spent in a thirteenth month closes its report (``final``, twelve months)
  and goes on in a new one, every nano-USD in exactly one of them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.kube import apply_crds
from tiergate_contract.ledger import LEDGER_FINALIZER, MAX_REPORT_MONTHS
from tiergate_devkit.cluster import ControlPlane
from tiergate_gateway.report_writer import SpendReporter
from tiergate_gateway.sources.kubeconfig import kube_access
from tiergate_gateway.spend import SpendRecorder

pytestmark = pytest.mark.cluster
YEAR = [f"2026-{number:02d}" for number in range(1, 13)]


@pytest.fixture
def ns(control_plane: ControlPlane, namespace: str) -> Iterator[str]:
    apply_crds(control_plane)
    yield namespace
    # No operator runs here: the test removes the finalizers itself.
    for report in reports(control_plane, namespace):
        control_plane.kubectl(
            "-n", namespace, "patch", "spendreport", report["metadata"]["name"],
            "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False,
        )  # fmt: skip


def reports(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    listed = plane.kubectl("-n", namespace, "get", "spendreports", "-o", "json").stdout
    return list(json.loads(listed)["items"])


@pytest.fixture
async def writers(control_plane: ControlPlane, ns: str) -> AsyncIterator[list[SpendReporter]]:
    started: list[SpendReporter] = []
    yield started
    for writer in started:
        await writer.stop()


def writer_of(
    plane: ControlPlane, namespace: str, recorder: SpendRecorder, **options: Any
) -> SpendReporter:
    return SpendReporter(
        namespace, "gw-0", lambda: "gw", recorder, lambda: kube_access(plane.kubeconfig), **options
    )


async def test_a_report_with_no_news_heartbeats_at_its_interval(
    control_plane: ControlPlane, ns: str, writers: list[SpendReporter]
) -> None:
    recorder = SpendRecorder()
    writer = writer_of(control_plane, ns, recorder, interval=0.1, heartbeat=1.0)
    writers.append(writer)
    await writer.start()
    recorder.settle("t", "2026-12", "k/a", 0, 42, served=True)
    await asyncio.sleep(0.5)
    [first] = reports(control_plane, ns)
    writes = writer.writes
    seen = [first]
    for _ in range(3):
        await asyncio.sleep(1.1)
        [now] = reports(control_plane, ns)
        seen.append(now)
        # Never older than the heartbeat, one tick and the time kubectl takes.
        age = datetime.now(UTC) - datetime.fromisoformat(now["spec"]["reportedAt"])
        assert age.total_seconds() < 1.8, age
    # About one write a second with no news: neither every tick (0.1 s) nor none.
    assert 2 <= writer.writes - writes <= 4, writer.writes - writes
    versions = [r["metadata"]["resourceVersion"] for r in seen]
    assert len(set(versions)) == 4, versions
    unchanged = [{**r["spec"], "reportedAt": None} for r in seen]
    assert all(spec == unchanged[0] for spec in unchanged), "a heartbeat changed the money"
    assert unchanged[0]["tiers"][0]["months"][0]["spentNano"] == 42


async def test_a_thirteenth_month_closes_the_report_and_the_api_takes_both(
    control_plane: ControlPlane, ns: str, writers: list[SpendReporter]
) -> None:
    # The API's own bound: a report of thirteen months is refused.
    moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    too_long = {
        "apiVersion": "tiergate.dev/v1alpha1",
        "kind": "SpendReport",
        "metadata": {"name": "too-long", "namespace": ns},
        "spec": {
            "gateway": "gw",
            "pod": "gw-0",
            "startedAt": moment,
            "reportedAt": moment,
            "tiers": [
                {
                    "tier": "t",
                    "months": [
                        {"month": m, "spentNano": 1, "calls": 1} for m in [*YEAR, "2027-01"]
                    ],
                }
            ],
        },
    }
    refused = control_plane.kubectl("create", "-f", "-", input=json.dumps(too_long), check=False)
    assert refused.returncode != 0 and "12" in refused.stderr, refused.stderr
    recorder = SpendRecorder()  # the real clock: last-use moments finer than a report keeps
    writer = writer_of(control_plane, ns, recorder, interval=60)
    writers.append(writer)
    await writer.start()
    for number, month in enumerate(YEAR, start=1):
        recorder.settle("t", month, "k/a", 0, number, served=True)
    await writer.write()
    first = writer.name
    recorder.settle("t", "2027-01", "k/a", 0, 13, served=True)
    await writer.write()
    recorder.settle("t", "2027-01", "k/a", 0, 7, served=True)
    await writer.write()
    assert writer.name != first and writer.reports_started == 1
    by_name = {r["metadata"]["name"]: r for r in reports(control_plane, ns)}
    assert set(by_name) == {first, writer.name}
    closed, current = by_name[first], by_name[writer.name]
    assert closed["spec"]["final"] is True and current["spec"]["final"] is False
    assert closed["metadata"]["finalizers"] == [LEDGER_FINALIZER]
    assert [m["month"] for m in closed["spec"]["tiers"][0]["months"]] == YEAR
    assert len(YEAR) == MAX_REPORT_MONTHS
    assert [(m["month"], m["spentNano"]) for m in current["spec"]["tiers"][0]["months"]] == [
        ("2027-01", 20)
    ]
    total = sum(m["spentNano"] for r in (closed, current) for m in r["spec"]["tiers"][0]["months"])
    assert total == sum(range(1, 13)) + 20
