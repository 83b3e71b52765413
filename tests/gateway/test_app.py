"""The app hands the server what it knows: which methods each path accepts, and the limits."""

from __future__ import annotations

import httpx

from tests.support.gateway import STARTUP_KEY, config, route, target, tier


def _gateway(upstreams, start_gateway, **overrides):
    cfg = config(
        [route("deepseek-chat", target("a", upstreams["a"].base_url))],
        [tier("startup", STARTUP_KEY, ["deepseek-chat"])],
    )
    return start_gateway(cfg, **overrides)


def test_a_405_names_the_methods_the_path_accepts(upstreams, start_gateway):
    gateway = _gateway(upstreams, start_gateway)
    with httpx.Client(base_url=gateway.url, timeout=5) as client:
        proxied = client.get("/v1/chat/completions")
        assert proxied.status_code == 405
        assert proxied.headers["allow"] == "POST"
        assert proxied.json()["error"]["code"] == "method_not_allowed"
        health = client.post("/healthz")
        assert health.status_code == 405
        assert health.headers["allow"] == "GET, HEAD"
        head = client.head("/healthz")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(client.get("/healthz").content))


def test_the_server_limits_come_from_the_settings(upstreams, start_gateway):
    gateway = _gateway(upstreams, start_gateway, max_line_bytes=1024, max_body_bytes=2048)
    with httpx.Client(base_url=gateway.url, timeout=5) as client:
        long_header = client.get("/healthz", headers={"x-pad": "a" * 2000})
        assert long_header.status_code == 431
        big_body = client.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {STARTUP_KEY}"},
            content=b"{" + b" " * 4096 + b"}",
        )
        assert big_body.status_code == 413
        assert client.get("/healthz").status_code == 200
