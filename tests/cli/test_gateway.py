"""``tiergate gateway -f``: the real gateway from the example manifests serves the openai SDK."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from tests.support.kube import EXAMPLES
from tiergate_cli.mock_upstream import RunningUpstreams, start_in_thread

STARTUP_KEY = "tg-startup-fake-key-0001"
ACME_KEY = "tg-acme-fake-key-search-0001"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def upstream() -> Iterator[RunningUpstreams]:
    running = start_in_thread({"mock": 0})
    yield running
    running.stop()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bytes(response.read())


@contextmanager
def gateway(
    upstream: RunningUpstreams, tmp_path: Path, *extra: str, manifests: Path = EXAMPLES
) -> Iterator[str]:
    port = _free_port()
    log = tmp_path / f"gateway-{port}.log"
    command = [
        sys.executable,
        "-m",
        "tiergate_cli",
        "gateway",
        "-f",
        str(manifests),
        "--port",
        str(port),
        "--upstream-override",
        f"*={upstream.base_url('mock')}",
        *extra,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                _get(f"http://127.0.0.1:{port}/readyz")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"gateway did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        assert STARTUP_KEY not in log.read_text() and ACME_KEY not in log.read_text()


def test_the_shared_gateway_answers_the_sdk(upstream: RunningUpstreams, tmp_path: Path) -> None:
    with gateway(upstream, tmp_path) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key=STARTUP_KEY, max_retries=0)
        answer = client.chat.completions.create(
            model="deepseek-chat", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content is not None
        assert answer.choices[0].message.content.startswith("Hello from mock")
        assert answer.usage is not None and answer.usage.completion_tokens == 8
        stream = client.chat.completions.create(
            model="deepseek-chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text.startswith("Hello from mock")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base_url, api_key="tg-wrong", max_retries=0).models.list()
        with pytest.raises(
            openai.AuthenticationError
        ):  # acme's key belongs to its dedicated gateway
            openai.OpenAI(base_url=base_url, api_key=ACME_KEY, max_retries=0).models.list()


def test_the_dedicated_gateway_uses_the_tiers_upstream_channel(
    upstream: RunningUpstreams, tmp_path: Path
) -> None:
    _reset = urllib.request.Request(
        f"http://127.0.0.1:{upstream.ports['mock']}/admin/reset", method="POST"
    )
    urllib.request.urlopen(_reset, timeout=2).close()
    with gateway(upstream, tmp_path, "--gateway", "tiergate-enterprise-acme") as base_url:
        client = openai.OpenAI(base_url=base_url, api_key=ACME_KEY, max_retries=0)
        client.chat.completions.create(
            model="deepseek-chat", messages=[{"role": "user", "content": "hi"}]
        )
    stats = json.loads(_get(f"http://127.0.0.1:{upstream.ports['mock']}/admin/stats"))
    assert all(model.startswith("Pro/") for model in stats["models"]), stats


def test_an_unknown_gateway_lists_the_known_ones(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiergate_cli",
            "gateway",
            "-f",
            str(EXAMPLES),
            "--gateway",
            "nope",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "gateways: tiergate-enterprise-acme, tiergate-shared" in result.stderr


def test_keys_can_come_from_a_keys_dir_instead_of_secrets(
    upstream: RunningUpstreams, tmp_path: Path
) -> None:
    manifests = tmp_path / "repo"
    shutil.copytree(EXAMPLES, manifests)
    (manifests / "startup-keys.yaml").unlink()  # a GitOps repository keeps no Secrets
    (tmp_path / "keys" / "startup-keys").mkdir(parents=True)
    (tmp_path / "keys" / "startup-keys" / "laptop").write_text("tg-local-key-0001\n")
    with gateway(
        upstream, tmp_path, "--keys-dir", str(tmp_path / "keys"), manifests=manifests
    ) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="tg-local-key-0001", max_retries=0)
        assert [m.id for m in client.models.list()] == ["deepseek-chat"]
