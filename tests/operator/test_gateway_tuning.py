"""Gateway tuning from the chart: checked by the operator at start, rendered into every gateway."""

from __future__ import annotations

import json

import pytest

from tests.operator.test_render import by_kind, example_plans
from tiergate_gateway.__main__ import TUNING_FLAGS, parse_args
from tiergate_operator.gateway_tuning import GATEWAY_TUNING
from tiergate_operator.render import render
from tiergate_operator.settings import SettingsError, load_operator_settings


def test_the_table_names_exactly_the_gateways_tuning_flags() -> None:
    assert set(GATEWAY_TUNING) == {name for name, _, _ in TUNING_FLAGS} | {"log_format"}


def test_every_rendered_value_is_one_the_gateway_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    tuning = {
        "maxBodyBytes": 1048576,
        "maxResponseBytes": 4194304,
        "headerTimeoutSeconds": 5,
        "accessLogSample": 0.25,
        "ttftBuckets": [0.2, 0.5, 1],
        "overheadBuckets": "0.001,0.01",
        "logFormat": "text",
        "maxJsonDepth": 32,
        "redisMaxConnections": 16,
        "redisTimeoutSeconds": "0.5",
        "leaseMarginSeconds": 10,
    }
    settings = load_operator_settings({"TIERGATE_GATEWAY_TUNING": json.dumps(tuning)})
    deployment = by_kind(render(example_plans()["tiergate-shared"], settings))["Deployment"]
    env = {
        e["name"]: e["value"]
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        if "value" in e
    }
    assert env["TIERGATE_GATEWAY_MAX_BODY_BYTES"] == "1048576"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    gateway, _ = parse_args([])  # the gateway reads the same variables and accepts them
    assert gateway.max_body_bytes == 1048576
    assert gateway.ttft_buckets == (0.2, 0.5, 1.0)
    assert gateway.overhead_buckets == (0.001, 0.01)
    assert gateway.access_log_sample == 0.25 and gateway.log_format == "text"
    assert gateway.max_json_depth == 32 and gateway.header_timeout_seconds == 5
    assert (gateway.redis_max_connections, gateway.redis_timeout_seconds) == (16, 0.5)
    assert gateway.lease_margin_seconds == 10


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        ('{"maxBodyByte": 1}', "gateway.tuning.maxBodyByte is not a gateway setting; known:"),
        ('{"maxBodyBytes": -1}', "gateway.tuning.maxBodyBytes=-1 must be a whole number"),
        ('{"maxBodyBytes": "8Mi"}', "gateway.tuning.maxBodyBytes='8Mi' must be a whole number"),
        ('{"ttftBuckets": ["fast"]}', "gateway.tuning.ttftBuckets=['fast'] must be a list"),
        ('{"logFormat": "xml"}', "gateway.tuning.logFormat='xml' must be \"json\" or"),
        ("[1, 2]", "TIERGATE_GATEWAY_TUNING must be a JSON object"),
        ("{nope", "TIERGATE_GATEWAY_TUNING is not JSON"),
    ],
)
def test_bad_tuning_stops_the_operator_with_a_message_naming_it(tuning: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_operator_settings({"TIERGATE_GATEWAY_TUNING": tuning})
    assert message in str(caught.value)
