"""The CLI's building blocks: spend from metrics, processes by PID, the mock upstream's admin API."""

from __future__ import annotations

import json
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path

import openai

from tiergate_cli.mock_upstream import start_in_thread
from tiergate_cli.status import spend_from_metrics
from tiergate_devkit.processes import is_running, spawn, stop_process

METRICS = """\
# TYPE tiergate_gateway_cost_usd_total counter
tiergate_gateway_cost_usd_total{route="deepseek-chat",target="primary",tier="startup"} 4e-06
tiergate_gateway_cost_usd_total{route="deepseek-chat",target="secondary",tier="startup"} 1.5
tiergate_gateway_cost_usd_created{route="deepseek-chat",target="primary",tier="startup"} 1.7e+09
"""


def test_spend_sums_the_cost_counters_per_tier_and_route() -> None:
    assert spend_from_metrics(METRICS) == {("startup", "deepseek-chat"): Decimal("1.500004")}


def test_processes_are_stopped_by_pid_and_only_while_theirs(tmp_path: Path) -> None:
    record = spawn(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], {}, tmp_path / "s.log"
    )
    assert is_running(record)
    impostor = record.__class__(record.name, record.pid, ("something", "else"), record.log)
    assert not stop_process(impostor)  # a PID whose command line differs is left alone
    assert stop_process(record, grace=5)
    assert not is_running(record)


def test_the_mock_upstream_fails_on_demand() -> None:
    upstreams = start_in_thread({"primary": 0})
    try:
        admin = f"http://127.0.0.1:{upstreams.ports['primary']}/admin"
        order = urllib.request.Request(
            f"{admin}/fail", data=json.dumps({"status": 429, "count": 1}).encode(), method="POST"
        )
        urllib.request.urlopen(order, timeout=5).close()
        client = openai.OpenAI(base_url=upstreams.base_url("primary"), api_key="x", max_retries=0)
        try:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            raise AssertionError("expected a 429")
        except openai.RateLimitError:
            pass
        answer = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == "Hello from primary (m)"
        with urllib.request.urlopen(f"{admin}/stats", timeout=5) as response:
            assert json.loads(response.read()) == {
                "name": "primary",
                "served": 1,
                "refused": 1,
                "models": {"m": 1},
            }
    finally:
        upstreams.stop()
