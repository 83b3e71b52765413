"""Key expiry, revocation and rotation end to end: the real control plane, the operator, two
real gateway processes watching their ConfigMap, and the openai SDK.

One story per test module run: a key Secret that expires a few seconds in (401 key_expired
from that moment on both replicas, with no config written at expiry), a reference disabled
and enabled again, a Secret value removed; meanwhile a client on the new key rotates in
with overlap and never sees an error.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.kube import condition, events, eventually, get, wait_ready
from tests.support.upstream import MockUpstream
from tiergate_devkit.cluster import ControlPlane

pytestmark = pytest.mark.cluster

OLD, NEW = "tg-web-old-key-0001", "tg-web-new-key-0002"
TEAM_A, TEAM_B = "tg-web-team-a-0003", "tg-web-team-b-0004"
EXPIRES_IN = 25.0  # seconds: time to see the config served before the key expires


def _route(base_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "tiergate.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "chat"},
        "spec": {
            "model": "chat",
            "targets": [{"name": "a", "baseURL": base_url, "upstreamModel": "up"}],
        },
    }


def _tier(expires_at: str, *, teams_disabled: bool = False) -> dict[str, Any]:
    teams: dict[str, Any] = {"secretRef": {"name": "web-teams"}}
    if teams_disabled:
        teams["disabled"] = True
    return {
        "apiVersion": "tiergate.dev/v1alpha1",
        "kind": "ApiKeyTier",
        "metadata": {"name": "web"},
        "spec": {
            "isolation": "Shared",
            "keys": [
                {"secretRef": {"name": "web-old"}, "expiresAt": expires_at},
                {"secretRef": {"name": "web-new"}},
                teams,
            ],
        },
    }


def _apply(plane: ControlPlane, namespace: str, *bodies: dict[str, Any]) -> None:
    items = {"apiVersion": "v1", "kind": "List", "items": list(bodies)}
    plane.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(items))


def _client(gateway: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=10)


def _outcome(gateway: GatewayProcess, key: str) -> str:
    """ "ok", or the error code the SDK raised (AuthenticationError only)."""
    try:
        _client(gateway, key).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
    except openai.AuthenticationError as error:
        return str(error.code)
    return "ok"


def _on_every_replica(gateways: list[GatewayProcess], key: str, wanted: str) -> bool:
    return all(_outcome(g, key) == wanted for g in gateways)


class _SteadyClient:
    """A client on the new key calling both replicas in turn for the whole story."""

    def __init__(self, gateways: list[GatewayProcess]) -> None:
        self.gateways, self.calls, self.errors = gateways, 0, list[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            gateway = self.gateways[self.calls % len(self.gateways)]
            try:
                outcome = _outcome(gateway, NEW)
            except openai.OpenAIError as error:
                outcome = repr(error)
            self.calls += 1
            if outcome != "ok":
                self.errors.append(outcome)
            time.sleep(0.05)

    def __enter__(self) -> _SteadyClient:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)


@pytest.fixture
def upstream() -> Iterator[MockUpstream]:
    server = MockUpstream("a").start()
    yield server
    server.stop()


@pytest.fixture
def gateways(
    control_plane: ControlPlane, namespace: str, operator_log: Path, upstream: MockUpstream
) -> Iterator[list[GatewayProcess]]:
    """The shared gateway's two replicas, as local processes watching its ConfigMap."""
    plane = control_plane
    for name, values in (
        ("web-old", {"k": OLD}),
        ("web-new", {"k": NEW}),
        ("web-teams", {"a": TEAM_A, "b": TEAM_B}),
    ):
        literals = [f"--from-literal={key}={value}" for key, value in values.items()]
        plane.kubectl("-n", namespace, "create", "secret", "generic", name, *literals)
    expires = datetime.now(UTC) + timedelta(seconds=EXPIRES_IN)
    _apply(plane, namespace, _route(upstream.base_url), _tier(_rfc3339(expires)))
    wait_ready(plane, namespace, "apikeytier/web", "modelroute/chat")
    started = [
        GatewayProcess(
            "--configmap", f"{namespace}/tiergate-shared", "--kubeconfig", str(plane.kubeconfig)
        ).start(30)
        for _ in range(2)
    ]
    yield started
    logs = [g.stop() for g in started]
    for log in logs:
        assert all(key not in log for key in (OLD, NEW, TEAM_A, TEAM_B)), "a key reached a log"


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _expiry(plane: ControlPlane, namespace: str) -> datetime:
    body = get(plane, namespace, "apikeytier", "web")
    return datetime.fromisoformat(body["spec"]["keys"][0]["expiresAt"])


def test_keys_expire_revoke_and_rotate_on_every_replica(
    control_plane: ControlPlane, namespace: str, gateways: list[GatewayProcess], operator_log: Path
) -> None:
    plane = control_plane
    with _SteadyClient(gateways) as steady:
        # Before its moment the expiring key works everywhere, and the tier warns about it.
        assert _on_every_replica(gateways, OLD, "ok")
        soon = condition(get(plane, namespace, "apikeytier", "web"), "KeysExpiringSoon")
        assert (soon["status"], soon["reason"]) == ("True", "ExpiringSoon")
        assert "Secret web-old expires at" in soon["message"]
        assert events(plane, namespace, "web", "ExpiringSoon")[0]["type"] == "Warning"
        assert condition(get(plane, namespace, "apikeytier", "web"), "Ready")["status"] == "True"

        # At its moment: 401 key_expired on both replicas, and no config was written for it.
        configmap_version = get(plane, namespace, "configmap", "tiergate-shared")["metadata"][
            "resourceVersion"
        ]
        moment = _expiry(plane, namespace)
        time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))
        assert _on_every_replica(gateways, OLD, "key_expired")
        assert datetime.now(UTC) - moment < timedelta(seconds=5)
        expired = eventually(
            lambda: (
                (c := condition(get(plane, namespace, "apikeytier", "web"), "KeysExpiringSoon"))[
                    "reason"
                ]
                == "KeysExpired"
                and c
            ),
            what="KeysExpired reported by the operator's own timer",
        )
        assert "Secret web-old expired at" in expired["message"]
        assert events(plane, namespace, "web", "KeysExpired")
        after = get(plane, namespace, "configmap", "tiergate-shared")["metadata"]
        assert after["resourceVersion"] == configmap_version

        # Disabled: the team Secret's keys stop on both replicas; enabled again, they work.
        assert _on_every_replica(gateways, TEAM_A, "ok")
        _apply(plane, namespace, _tier(_rfc3339(moment), teams_disabled=True))
        eventually(lambda: _on_every_replica(gateways, TEAM_A, "invalid_api_key"), what="disabled")
        _apply(plane, namespace, _tier(_rfc3339(moment)))
        eventually(lambda: _on_every_replica(gateways, TEAM_A, "ok"), what="enabled again")

        # A value removed from the Secret: that key stops, the Secret's other key works.
        plane.kubectl(
            "-n", namespace, "patch", "secret", "web-teams", "--type=json",
            "-p", '[{"op": "remove", "path": "/data/b"}]',
        )  # fmt: skip
        eventually(lambda: _on_every_replica(gateways, TEAM_B, "invalid_api_key"), what="removed")
        assert _on_every_replica(gateways, TEAM_A, "ok")

    # The rotation's new key, added before the old one expired, never failed on any replica.
    assert steady.calls > 50
    assert steady.errors == []
    log = operator_log.read_text()
    assert all(key not in log for key in (OLD, NEW, TEAM_A, TEAM_B))
