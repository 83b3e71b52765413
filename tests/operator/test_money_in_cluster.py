"""Money end to end: the real control plane, the operator, real gateway processes writing their
SpendReports, a real redis-server, and the openai SDK.

- A budget spent to 40% by a gateway that is then SIGKILLed: a new gateway refuses at 100%,
  without Redis (from the reports) and with a Redis restarted without persistence (the floor).
- Prepaid credits: spent, refused with ``insufficient_quota`` (the SDK does not retry), topped
  up by a new grant that serves again within seconds; removing a grant is refused by the API.
- The tier's status and ``kubectl get akt`` show the month's spend, the budget, the credits.
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

from tests.support.gateway import GatewayProcess
from tests.support.kube import eventually, get, wait_ready
from tests.support.redis_servers import RedisServer, start_redis
from tests.support.upstream import MockUpstream
from tiergate_devkit.cluster import ControlPlane

pytestmark = pytest.mark.cluster

KEY = "tg-money-key-0001"
# 10 prompt + 5 completion tokens per call (the mock's usage) at $1,000 per million each:
# every call costs exactly $0.015. It reserves more: its prompt estimated from the body's
# size (about 18 tokens) and max_tokens=5, $0.023. So a limit of $0.31 serves exactly 20
# calls (the 20th reserves 0.285 + 0.023), and $0.16 exactly 10.
PRICE = "1000"
CALL_USD = Decimal("0.015")


def _route(base_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "tiergate.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "chat"},
        "spec": {
            "model": "chat",
            "targets": [
                {
                    "name": "a",
                    "baseURL": base_url,
                    "upstreamModel": "up",
                    "pricing": {"inputPerMillion": PRICE, "outputPerMillion": PRICE},
                }
            ],
        },
    }


def _tier(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tiergate.dev/v1alpha1",
        "kind": "ApiKeyTier",
        "metadata": {"name": "web"},
        "spec": {"isolation": "Shared", "keys": [{"secretRef": {"name": "web-key"}}], **spec},
    }


def _apply(plane: ControlPlane, namespace: str, *bodies: dict[str, Any], check: bool = True) -> Any:
    items = {"apiVersion": "v1", "kind": "List", "items": list(bodies)}
    return plane.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(items), check=check)


def _call(gateway: GatewayProcess) -> str:
    """ "ok", or a refusal's error code and x-should-retry header."""
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=10)
    try:
        client.chat.completions.create(
            model="chat", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    except openai.RateLimitError as error:
        retry = error.response.headers.get("x-should-retry")
        return f"{error.code} (x-should-retry: {retry})"
    return "ok"


def _spend(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    return get(plane, namespace, "apikeytier", "web").get("status", {}).get("spend") or {}


def _reports(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    listed = plane.kubectl("-n", namespace, "get", "spendreports", "-o", "json").stdout
    return json.loads(listed)["items"]  # type: ignore[no-any-return]


def _reported_calls(plane: ControlPlane, namespace: str) -> int:
    return sum(
        month["calls"]
        for report in _reports(plane, namespace)
        for tier in report["spec"].get("tiers", [])
        for month in tier["months"]
    )


@pytest.fixture
def upstream() -> Iterator[MockUpstream]:
    server = MockUpstream("a", prompt_tokens=10, completion_tokens=5).start()
    yield server
    server.stop()


def _setup(plane: ControlPlane, namespace: str, upstream: MockUpstream, **spec: Any) -> None:
    plane.kubectl(
        "-n", namespace, "create", "secret", "generic", "web-key", f"--from-literal=k={KEY}"
    )
    _apply(plane, namespace, _route(upstream.base_url), _tier(**spec))
    wait_ready(plane, namespace, "apikeytier/web", "modelroute/chat")


def _gateway(plane: ControlPlane, namespace: str, *extra: str) -> GatewayProcess:
    return GatewayProcess(
        "--configmap",
        f"{namespace}/tiergate-shared",
        "--kubeconfig",
        str(plane.kubeconfig),
        "--spend-report-seconds",
        "1",
        *extra,
    ).start(30)


def _kill(gateway: GatewayProcess) -> None:
    assert gateway.proc is not None
    gateway.proc.send_signal(signal.SIGKILL)
    gateway.proc.wait(10)


def _spend_until_refused(gateway: GatewayProcess, limit: int = 100) -> tuple[int, str]:
    for served in range(limit):
        outcome = _call(gateway)
        if outcome != "ok":
            return served, outcome
    raise AssertionError(f"still served after {limit} calls")


@pytest.mark.parametrize("with_redis", [False, True], ids=["local", "redis"])
def test_a_killed_gateway_forgets_no_spend(
    control_plane: ControlPlane,
    namespace: str,
    operator_log: Path,
    upstream: MockUpstream,
    tmp_path: Path,
    with_redis: bool,
) -> None:
    plane = control_plane
    # Hard limit: 20 calls. The first gateway spends 8 (40%), is SIGKILLed once its report
    # holds them, and the next gateway must stop at 20 in all.
    _setup(plane, namespace, upstream, budget={"monthlyUSD": "0.31", "softThresholdPercent": 50})
    redis: RedisServer | None = start_redis(tmp_path / "redis") if with_redis else None
    extra = ("--redis-url", f"redis://127.0.0.1:{redis.port}/0") if redis else ()
    try:
        first = _gateway(plane, namespace, *extra)
        assert [_call(first) for _ in range(8)] == ["ok"] * 8
        eventually(lambda: _reported_calls(plane, namespace) == 8, timeout=20, what="8 reported")
        _kill(first)
        if redis is not None:
            # And Redis loses the month too: restarted on the same port without persistence.
            redis.stop()
            redis = start_redis(tmp_path / "redis2", port=redis.port)
        second = _gateway(plane, namespace, *extra)
        served, refusal = _spend_until_refused(second)
        second.stop()
    finally:
        if redis is not None:
            redis.stop()
    assert (served, refusal) == (12, "budget_exceeded (x-should-retry: false)")
    # The tier's status has every call within 30 s, the killed process's included.
    spend = eventually(
        lambda: (s := _spend(plane, namespace)).get("monthCalls") == 20 and s,
        timeout=30,
        what="20 calls in status.spend",
    )
    assert Decimal(spend["monthUSD"]) == 20 * CALL_USD
    assert Decimal(spend["lifetimeUSD"]) == 20 * CALL_USD


def test_credits_spent_refused_and_topped_up(
    control_plane: ControlPlane, namespace: str, operator_log: Path, upstream: MockUpstream
) -> None:
    plane = control_plane
    welcome = {"id": "welcome", "amountUSD": "0.16", "reason": "free trial"}
    _setup(plane, namespace, upstream, credits={"grants": [welcome]})
    gateway = _gateway(plane, namespace)
    try:
        served, refusal = _spend_until_refused(gateway)
        assert (served, refusal) == (10, "credits_exhausted (x-should-retry: false)")
        answer = httpx.post(
            gateway.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {KEY}"},
            json={"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        )
        assert answer.status_code == 429
        error = answer.json()["error"]
        assert error["type"] == "insufficient_quota"
        assert "credit" in error["message"]

        # Removing or changing a grant is refused by the API server, naming the rule.
        edited = _apply(plane, namespace, _tier(credits={"grants": []}), check=False)
        assert edited.returncode != 0 and "grant" in edited.stderr

        # A top-up by GitOps serves again within seconds.
        topup = {"id": "topup-1", "amountUSD": "0.15", "reason": "invoice 42"}
        _apply(plane, namespace, _tier(credits={"grants": [welcome, topup]}))
        applied = time.monotonic()
        eventually(lambda: _call(gateway) == "ok", timeout=10, interval=0.05, what="top-up")
        assert time.monotonic() - applied < 2.0

        spend = eventually(
            lambda: (s := _spend(plane, namespace)).get("creditsUsedUSD") == "0.165" and s,
            timeout=30,
            what="credits in status",
        )
        assert Decimal(spend["creditsGrantedUSD"]) == Decimal("0.31")
        assert Decimal(spend["creditsRemainingUSD"]) == Decimal("0.145")
        [key] = spend["keys"]
        assert key["key"] == "web-key/k" and key["lastUsedAt"]
        table = plane.kubectl("-n", namespace, "get", "akt", "web").stdout
        assert "0.165" in table and "0.145" in table
    finally:
        output = gateway.stop()
    assert KEY not in output


@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "local"])
def test_three_replicas_against_one_hard_budget(
    control_plane: ControlPlane,
    namespace: str,
    operator_log: Path,
    upstream: MockUpstream,
    tmp_path: Path,
    with_redis: bool,
) -> None:
    """With Redis the replicas stop at the limit exactly (each call reserves its exact cost);
    without it, each learns the others' spend from their reports: the overshoot is bounded by
    what the others settle in one report interval (1 s here) plus the watch's delay."""
    plane = control_plane
    _setup(plane, namespace, upstream, budget={"monthlyUSD": "0.31", "softThresholdPercent": 90})
    redis = start_redis(tmp_path / "redis") if with_redis else None
    extra = ("--redis-url", f"redis://127.0.0.1:{redis.port}/0") if redis else ()
    gateways = [_gateway(plane, namespace, *extra) for _ in range(3)]
    pace = 0.25  # seconds between one client's calls: 4 calls/s per replica
    served = [0, 0, 0]

    def spend(index: int) -> None:
        """Call until refused twice, 1.5 s apart: a refusal can be passing (the others' calls
        in flight reserve more than they cost), the second one once all have settled."""
        refused = 0
        while refused < 2:
            if _call(gateways[index]) == "ok":
                served[index] += 1
                refused = 0
                time.sleep(pace)
            else:
                refused += 1
                time.sleep(1.5)

    try:
        threads = [threading.Thread(target=spend, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        for gateway in gateways:
            gateway.stop()
        if redis is not None:
            redis.stop()
    total = sum(served)
    print(f"three replicas, {'Redis' if redis else 'no Redis'}: {total} calls for a limit of 20")
    if with_redis:
        assert total == 20, served
    else:
        # Two other replicas at 4 calls/s for one report interval plus a second of watch delay.
        assert 20 <= total <= 20 + 2 * 4 * 2, served
