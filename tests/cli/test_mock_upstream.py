"""The mock upstreams ``tiergate gateway --mock-upstreams`` and the dev kit serve."""

from __future__ import annotations

import json
import urllib.request

import openai

from tiergate_cli.mock_upstream import start_in_thread


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
