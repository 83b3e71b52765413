"""The durable spend ledger on the real control plane, with real gateway processes, a mock
upstream on 127.0.0.1 and the openai SDK (``docs/ledger.md``).

Each gateway process writes its own SpendReport: created at start, updated with exactly the
calls it served, ``final`` at SIGTERM; a report deleted while its finalizer holds it (as the
operator folds it) makes the gateway start a new one with only what came since. A gateway
SIGKILLed after 40% of a budget, restarted, refuses at 100% (without Redis: from the reports;
with a Redis restarted without persistence: through the floor); credits spent before a
restart stay spent. Reservations of calls in flight on one replica count on another.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.gateway import (
    STARTUP_KEY,
    GatewayProcess,
    config,
    internal_errors,
    route,
    target,
    tier,
)
from tests.support.kube import apply_crds, eventually
from tests.support.redis_servers import start_redis
from tiergate_contract import Credits, GatewayConfig, KeyName, configmap_payload
from tiergate_contract import hash_client_key as digest
from tiergate_contract.ledger import LEDGER_FINALIZER
from tiergate_gateway.budget import nano_cost

pytestmark = pytest.mark.cluster

MSG = [{"role": "user", "content": "hi"}]
KEY_NAME = "startup-keys/alice"
# The mock upstream reports 10 prompt and 5 completion tokens; prices 1 and 2 USD per million.
CALL_NANO = nano_cost(10**9, 2 * 10**9, 10, 5)
BODY = {"model": "m", "messages": MSG, "max_tokens": 10}
RESERVED_NANO = nano_cost(
    10**9, 2 * 10**9, len(httpx.Request("POST", "http://x", json=BODY).content) // 4, 10
)
REPORT_SECONDS = "0.2"


@pytest.fixture(scope="module")
def ledger_crds(control_plane: Any) -> None:
    apply_crds(control_plane)


@pytest.fixture
def ns(control_plane: Any, namespace: str, ledger_crds: None) -> Iterator[str]:
    yield namespace
    # The finalizer is the operator's to remove; none runs here, so the test does.
    for report in reports(control_plane, namespace):
        release(control_plane, namespace, report["metadata"]["name"])


def the_config(upstream_url: str, budget: tuple[str, str] | None = None) -> GatewayConfig:
    t = tier("t", STARTUP_KEY, ["m"], budget=budget).model_copy(
        update={"key_names": (KeyName(sha256=digest(STARTUP_KEY), name=KEY_NAME),)}
    )
    return config([route("m", target("a", upstream_url))], [t])


def put_configmap(plane: Any, namespace: str, cfg: GatewayConfig) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "gw", "namespace": namespace},
        **configmap_payload(cfg),
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def gateway(plane: Any, namespace: str, tmp_path: Path, pod: str, *extra: str) -> GatewayProcess:
    return GatewayProcess(
        "--configmap",
        f"{namespace}/gw",
        "--kubeconfig",
        str(plane.kubeconfig),
        "--credentials-dir",
        str(tmp_path),
        "--spend-report-seconds",
        REPORT_SECONDS,
        "--log-format",
        "text",
        *extra,
        env={"POD_NAME": pod},
    ).start()


def reports(plane: Any, namespace: str) -> list[dict[str, Any]]:
    out = plane.kubectl("-n", namespace, "get", "spendreports", "-o", "json").stdout
    return list(json.loads(out)["items"])


def release(plane: Any, namespace: str, name: str) -> None:
    plane.kubectl(
        "-n",
        namespace,
        "patch",
        "spendreport",
        name,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
        check=False,
    )


def of_pod(plane: Any, namespace: str, pod: str) -> list[dict[str, Any]]:
    return [r for r in reports(plane, namespace) if r["spec"]["pod"] == pod]


def month_of(report: dict[str, Any]) -> dict[str, Any]:
    """The one tier's one month of a report (an empty month when there is none yet)."""
    tiers = report["spec"].get("tiers") or []
    months = tiers[0]["months"] if tiers else []
    return months[0] if months else {"spentNano": 0, "calls": 0, "keys": []}


def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=STARTUP_KEY, max_retries=0)


def call(gw: GatewayProcess) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json=BODY,
        headers={"authorization": f"Bearer {STARTUP_KEY}"},
        timeout=30,
    )


def reported_calls(plane: Any, namespace: str, pod: str, calls: int) -> dict[str, Any]:
    """The pod's one report, once it holds ``calls`` calls."""

    def check() -> dict[str, Any] | None:
        found = of_pod(plane, namespace, pod)
        return found[0] if len(found) == 1 and month_of(found[0])["calls"] == calls else None

    return eventually(check, timeout=15, interval=0.1, what=f"a report of {calls} calls")


def test_the_report_is_created_updated_exactly_and_final_at_sigterm(
    control_plane, ns, upstreams, tmp_path
):
    put_configmap(control_plane, ns, the_config(upstreams["a"].base_url))
    gw = gateway(control_plane, ns, tmp_path, "gw-a-0")
    try:
        [report] = of_pod(control_plane, ns, "gw-a-0")  # written at start, before any call
        meta = report["metadata"]
        assert meta["name"].startswith("gw-a-0-") and len(meta["name"]) == len("gw-a-0-") + 8
        assert meta["finalizers"] == [LEDGER_FINALIZER]
        assert meta["labels"] == {
            "app.kubernetes.io/managed-by": "tiergate",
            "tiergate.dev/gateway": "test",
        }
        assert report["spec"]["final"] is False and report["spec"]["gateway"] == "test"
        sdk = client(gw)
        for _ in range(2):
            sdk.chat.completions.create(model="m", messages=MSG, max_tokens=10)
        with sdk.chat.completions.create(
            model="m", messages=MSG, max_tokens=10, stream=True
        ) as stream:
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        report = reported_calls(control_plane, ns, "gw-a-0", 3)
        month = month_of(report)
        assert month["spentNano"] == 3 * CALL_NANO
        [key] = month["keys"]
        assert (key["key"], key["spentNano"], key["calls"]) == (KEY_NAME, 3 * CALL_NANO, 3)
        assert "lastUsedAt" in key
        assert report["spec"]["tiers"][0].get("reservedNano", 0) == 0
        written = report["metadata"]["resourceVersion"]
    finally:
        gw.stop()  # SIGTERM
    [final] = of_pod(control_plane, ns, "gw-a-0")
    assert final["spec"]["final"] is True
    assert final["metadata"]["resourceVersion"] != written
    assert month_of(final)["spentNano"] == 3 * CALL_NANO and month_of(final)["calls"] == 3


def test_a_terminating_report_makes_way_for_a_new_one_with_only_the_delta(
    control_plane, ns, upstreams, tmp_path
):
    put_configmap(control_plane, ns, the_config(upstreams["a"].base_url))
    gw = gateway(control_plane, ns, tmp_path, "gw-b-0")
    try:
        for _ in range(2):
            assert call(gw).status_code == 200
        first = reported_calls(control_plane, ns, "gw-b-0", 2)
        name = first["metadata"]["name"]
        # As the operator folds it: deleted, kept by the finalizer with its money frozen.
        control_plane.kubectl("-n", ns, "delete", "spendreport", name, "--wait=false")
        assert call(gw).status_code == 200

        def replaced() -> list[dict[str, Any]] | None:
            found = {r["metadata"]["name"]: r for r in of_pod(control_plane, ns, "gw-b-0")}
            new = [r for n, r in found.items() if n != name]
            return new if new and month_of(new[0])["calls"] == 1 else None

        [second] = eventually(replaced, timeout=15, interval=0.1, what="a new report")
        assert month_of(second)["spentNano"] == CALL_NANO
        frozen = next(
            r for r in of_pod(control_plane, ns, "gw-b-0") if r["metadata"]["name"] == name
        )
        assert frozen["metadata"]["deletionTimestamp"]
        assert month_of(frozen)["calls"] == 2 and month_of(frozen)["spentNano"] == 2 * CALL_NANO
        # The old report goes (its finalizer removed); the new one carries on undisturbed.
        release(control_plane, ns, name)
        assert call(gw).status_code == 200
        reported = eventually(
            lambda: [r for r in of_pod(control_plane, ns, "gw-b-0") if month_of(r)["calls"] == 2],
            timeout=15,
            interval=0.1,
            what="the new report updated",
        )
        assert reported[0]["metadata"]["name"] == second["metadata"]["name"]
    finally:
        output = gw.stop()
    assert "was closed; reporting in" in output
    [final] = of_pod(control_plane, ns, "gw-b-0")
    assert final["spec"]["final"] is True and month_of(final)["calls"] == 2


def spend_until_refused(gw: GatewayProcess) -> int:
    served = 0
    while True:
        reply = call(gw)
        if reply.status_code != 200:
            assert reply.status_code == 429, reply.text
            assert reply.json()["error"]["code"] == "budget_exceeded"
            return served
        served += 1


def kill(gw: GatewayProcess) -> None:
    assert internal_errors(gw.url) == 0
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait(10)


# A budget of 50 calls (1,000,000 nano-USD hard); 40% of it is 20 calls.
BUDGET = ("0.0005", "0.001")
HARD_NANO = 1_000_000


def test_a_killed_gateway_s_spend_is_enforced_after_restart_without_redis(
    control_plane, ns, upstreams, tmp_path
):
    put_configmap(control_plane, ns, the_config(upstreams["a"].base_url, BUDGET))
    first = gateway(control_plane, ns, tmp_path, "gw-c-0")
    for _ in range(20):
        assert call(first).status_code == 200
    reported_calls(control_plane, ns, "gw-c-0", 20)  # on record within one report interval
    kill(first)
    again = gateway(control_plane, ns, tmp_path, "gw-c-0")  # the same pod, restarted
    try:
        served = spend_until_refused(again)
    finally:
        again.stop()
    total = (20 + served) * CALL_NANO
    # Refused at 100%: every admitted call fit (its reservation included), the next did not.
    assert total <= HARD_NANO < total + RESERVED_NANO
    assert 20 + served == len(upstreams["a"].received)


def test_a_killed_gateway_and_a_redis_restarted_without_persistence_keep_the_budget(
    control_plane, ns, upstreams, tmp_path
):
    put_configmap(control_plane, ns, the_config(upstreams["a"].base_url, BUDGET))
    redis = start_redis(tmp_path / "redis1")
    first = gateway(
        control_plane, ns, tmp_path, "gw-d-0", "--redis-url", f"redis://127.0.0.1:{redis.port}"
    )
    for _ in range(20):
        assert call(first).status_code == 200
    reported_calls(control_plane, ns, "gw-d-0", 20)
    kill(first)
    redis.stop()  # it saved nothing: its count is gone
    redis = start_redis(tmp_path / "redis2", port=redis.port)  # back on the same address
    again = gateway(
        control_plane, ns, tmp_path, "gw-d-0", "--redis-url", f"redis://127.0.0.1:{redis.port}"
    )
    try:
        served = spend_until_refused(again)
    finally:
        again.stop()
        redis.stop()
    total = (20 + served) * CALL_NANO
    assert total <= HARD_NANO < total + RESERVED_NANO


def test_reservations_in_flight_on_one_replica_count_on_another(
    control_plane, ns, upstreams, tmp_path
):
    slow, fast = upstreams["p"], upstreams["a"]
    slow.reset("slow", delay=4.0)
    # One budget for both replicas: room for one large call's reservation, not two.
    big = nano_cost(10**9, 2 * 10**9, 1, 400)  # about 800,000 nano-USD reserved per call
    cfg = config(
        [route("m", target("a", fast.base_url)), route("slow", target("p", slow.base_url))],
        [
            tier("t", STARTUP_KEY, ["m", "slow"], budget=("0.0009", "0.0012")).model_copy(
                update={"key_names": (KeyName(sha256=digest(STARTUP_KEY), name=KEY_NAME),)}
            )
        ],
    )
    put_configmap(control_plane, ns, cfg)
    one = gateway(control_plane, ns, tmp_path, "gw-e-0")
    two = gateway(control_plane, ns, tmp_path, "gw-e-1")
    try:
        holder = threading.Thread(
            target=lambda: httpx.post(
                one.url + "/v1/chat/completions",
                json={"model": "slow", "messages": MSG, "max_tokens": 400},
                headers={"authorization": f"Bearer {STARTUP_KEY}"},
                timeout=30,
            )
        )
        holder.start()
        assert slow.received_event.wait(10)

        def held() -> int | None:
            found = of_pod(control_plane, ns, "gw-e-0")
            tiers = found[0]["spec"].get("tiers") if found else None
            return tiers[0].get("reservedNano") if tiers else None

        assert eventually(held, timeout=5, interval=0.05, what="the reservation reported") >= big
        time.sleep(0.3)  # the other replica's watch
        # The other replica counts it: a call reserving as much again is refused there.
        refused = httpx.post(
            two.url + "/v1/chat/completions",
            json={"model": "m", "messages": MSG, "max_tokens": 400},
            headers={"authorization": f"Bearer {STARTUP_KEY}"},
        )
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "budget_exceeded"
        holder.join(30)
        # Settled: the reservation is gone from the report and the same call passes there.
        eventually(lambda: held() == 0, timeout=5, interval=0.05, what="the reservation released")
        time.sleep(0.3)
        passed = httpx.post(
            two.url + "/v1/chat/completions",
            json={"model": "m", "messages": MSG, "max_tokens": 400},
            headers={"authorization": f"Bearer {STARTUP_KEY}"},
        )
        assert passed.status_code == 200, passed.text
    finally:
        one.stop()
        two.stop()


def test_credits_spent_before_a_restart_stay_spent(control_plane, ns, upstreams, tmp_path):
    # Credits for 50 calls (1,000,000 nano-USD); a first process spends 20 and exits.
    t = tier("t", STARTUP_KEY, ["m"]).model_copy(
        update={
            "key_names": (KeyName(sha256=digest(STARTUP_KEY), name=KEY_NAME),),
            "credits": Credits(granted_usd=Decimal("0.001")),
        }
    )
    put_configmap(
        control_plane, ns, config([route("m", target("a", upstreams["a"].base_url))], [t])
    )
    first = gateway(control_plane, ns, tmp_path, "gw-f-0")
    for _ in range(20):
        assert call(first).status_code == 200
    first.stop()  # SIGTERM: the final report holds all 20
    again = gateway(control_plane, ns, tmp_path, "gw-f-1")
    try:
        served = 0
        while (reply := call(again)).status_code == 200:
            served += 1
        assert reply.status_code == 429 and reply.headers["x-should-retry"] == "false"
        assert reply.json()["error"]["code"] == "credits_exhausted"
    finally:
        again.stop()
    total = (20 + served) * CALL_NANO
    assert total <= HARD_NANO < total + RESERVED_NANO


def test_a_gateway_with_no_traffic_heartbeats_at_its_setting(
    control_plane, ns, upstreams, tmp_path
):
    """``--spend-heartbeat-seconds`` reaches the process's report writer: with no call at all,
    the report is written again at that interval (the operator folds a silent report)."""
    put_configmap(control_plane, ns, the_config(upstreams["a"].base_url))
    gw = gateway(control_plane, ns, tmp_path, "gw-h-0", "--spend-heartbeat-seconds", "1")
    try:
        [first] = of_pod(control_plane, ns, "gw-h-0")
        seen = {first["spec"]["reportedAt"]}

        def beats() -> bool:
            [report] = of_pod(control_plane, ns, "gw-h-0")
            seen.add(report["spec"]["reportedAt"])
            return len(seen) >= 3

        eventually(beats, timeout=10, interval=0.2, what="two heartbeats with no traffic")
        [report] = of_pod(control_plane, ns, "gw-h-0")
        assert month_of(report)["calls"] == 0
    finally:
        gw.stop()
