"""The story ``tiergate demo`` tells (``make demo``), on this machine, in about a minute.

``dev up``, then with the official ``openai`` SDK: a Shared and a Dedicated tier
answering (plain and streamed), the traffic split across targets, a failover while
the primary upstream fails, and a 429 once the startup tier is over its limit.
Everything is torn down at the end unless ``--keep`` (or ``KEEP=1``).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from tiergate_cli import status
from tiergate_cli.devstate import DevState
from tiergate_cli.manifests import load_manifests
from tiergate_cli.output import note, table
from tiergate_devkit.checkout import examples_dir
from tiergate_devkit.dev import down, instructions, up
from tiergate_operator.names import SHARED_GATEWAY, dedicated_gateway

__all__ = ["run"]

SHARED, DEDICATED = SHARED_GATEWAY, dedicated_gateway("enterprise-acme")
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]


class Upstreams:
    """The mock upstreams' admin endpoints."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports

    def _call(self, name: str, path: str, order: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if order is None else json.dumps(order).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports[name]}/admin/{path}",
            data=data,
            method="GET" if path == "stats" else "POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def reset(self) -> None:
        for name in self.ports:
            self._call(name, "reset", {})

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: self._call(name, "stats") for name in sorted(self.ports)}

    def fail(self, name: str, status: int, seconds: float) -> None:
        self._call(name, "fail", {"status": status, "seconds": seconds})

    def recover(self, name: str) -> None:
        self._call(name, "recover", {})


def _heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _client(state: DevState, gateway: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{state.gateway_url(gateway)}/v1", api_key=key, max_retries=0, timeout=30
    )


def _ask(client: openai.OpenAI, model: str) -> str:
    answer = client.chat.completions.create(model=model, messages=HELLO)
    return answer.choices[0].message.content or ""


def _ask_streamed(client: openai.OpenAI, model: str) -> str:
    parts = []
    for chunk in client.chat.completions.create(model=model, messages=HELLO, stream=True):
        if isinstance(chunk, ChatCompletionChunk) and chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
    return "".join(parts).strip()


def _traffic_table(stats: dict[str, dict[str, Any]], total: int) -> str:
    rows = [
        [
            name,
            str(s["served"]),
            f"{100 * s['served'] / total:.0f}%" if total else "-",
            str(s["refused"]),
            ", ".join(sorted(s["models"])) or "-",
        ]
        for name, s in stats.items()
    ]
    return table(
        ["target", "served", "share", "refused", "upstream model asked for"], rows, right=(1, 2, 3)
    )


def _tiers(state: DevState, step: Callable[[str], None]) -> tuple[openai.OpenAI, openai.OpenAI]:
    manifests = load_manifests(examples_dir(), state.namespace)
    keys = manifests.secret_values(state.namespace)
    shared = _client(state, SHARED, keys["startup-keys"]["key-1"])
    dedicated = _client(state, DEDICATED, keys["enterprise-acme-keys"]["team-search"])
    _heading("1. Shared tier 'startup' through the shared gateway (openai SDK, plain and streamed)")
    print(f"  answer:   {_ask(shared, 'deepseek-chat')}")
    print(f"  streamed: {_ask_streamed(shared, 'deepseek-chat')}")
    _heading(
        "2. Dedicated tier 'enterprise-acme' through its own gateway (3 replicas, its Pro/ channel)"
    )
    print(f"  answer:   {_ask(dedicated, 'deepseek-chat')}")
    try:
        shared.with_options(api_key="tg-not-a-key").models.list()
    except openai.AuthenticationError as error:
        print(f"  a wrong key: HTTP {error.status_code} {_message(error)}")
    return shared, dedicated


def _split(dedicated: openai.OpenAI, upstreams: Upstreams, count: int) -> None:
    _heading(
        f"3. Traffic split: {count} requests as enterprise-acme (route weights primary 80 / secondary 20)"
    )
    upstreams.reset()
    for _ in range(count):
        _ask(dedicated, "deepseek-chat")
    print(_traffic_table(upstreams.stats(), count), end="")


def _failover(dedicated: openai.OpenAI, upstreams: Upstreams, state: DevState) -> None:
    _heading(
        "4. Failover: the primary upstream answers 503 for 10 s (failover on 429/5xx, circuit breaker)"
    )
    upstreams.reset()
    upstreams.fail("primary", 503, seconds=10)
    answered = sum(1 for _ in range(20) if _ask(dedicated, "deepseek-chat"))
    upstreams.recover("primary")
    print(f"  {answered}/20 requests answered while the primary failed:")
    print(_traffic_table(upstreams.stats(), 20), end="")
    metrics = (
        urllib.request.urlopen(f"{state.gateway_url(DEDICATED)}/metrics", timeout=5).read().decode()
    )
    failovers = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("tiergate_gateway_failovers_total{")
    )
    print(f"  gateway metric tiergate_gateway_failovers_total: {failovers:.0f}")


def _message(error: openai.APIStatusError) -> str:
    """The ``message`` of OpenAI's error envelope, as the gateway sent it."""
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
    return error.message


def _rate_limit(shared: openai.OpenAI) -> None:
    _heading("5. Limits: the startup tier allows 50 requests/min (2 were sent in step 1)")
    for sent in range(1, 80):
        try:
            _ask(shared, "deepseek-chat")
        except openai.RateLimitError as error:
            retry = error.response.headers.get("retry-after", "?")
            print(
                f"  {sent - 1} more answered; request {sent} of this step: "
                f"HTTP {error.status_code} {_message(error)!r} (retry-after {retry}s)"
            )
            return
    print("  no 429 after 80 requests: the limit did not hold")


def run(args: argparse.Namespace) -> int:
    began = time.monotonic()
    manifests = load_manifests(examples_dir(), "demo")
    root = Path(args.dir)
    state = up(
        manifests, root, "demo", lambda m: note(f"{time.monotonic() - began:5.1f}s {m}", "demo")
    )
    try:
        upstreams = Upstreams(state.upstreams)
        shared, dedicated = _tiers(state, lambda m: note(m, "demo"))
        _split(dedicated, upstreams, args.split_requests)
        _failover(dedicated, upstreams, state)
        _rate_limit(shared)
        _heading("6. tiergate status")
        status.run(
            argparse.Namespace(
                namespace="demo",
                all_namespaces=False,
                kubeconfig=state.kubeconfig,
                dir=root,
                keys=None,  # the prefix the operator got: $TIERGATE_PREFIX, else the default
            )
        )
    finally:
        if args.keep:
            print(instructions(manifests, state))
        else:
            _heading("7. Tearing down (KEEP=1 leaves it running)")
            down(root, lambda m: note(m, "demo"))
    note(f"demo finished in {time.monotonic() - began:.0f} s", "demo")
    return 0
