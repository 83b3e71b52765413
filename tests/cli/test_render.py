"""``tiergate render``: the operator's pipeline offline, its problems, and clear errors on bad input."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.support.kube import EXAMPLES
from tests.support.manifests import NOW, store_of
from tiergate_contract import GatewayConfig, hash_client_key
from tiergate_operator.reconcile import decide
from tiergate_operator.settings import OperatorSettings

from .conftest import Result


def _strip_uids(manifest: dict[str, object]) -> str:
    text = json.dumps(manifest, sort_keys=True)
    for name in ("startup", "enterprise-acme"):
        text = text.replace(f"<uid of ApiKeyTier/{name}>", "uid").replace(f"uid-{name}", "uid")
    return text


def test_render_prints_what_decide_applies(tiergate: Callable[..., Result]) -> None:
    result = tiergate("render", "-f", str(EXAMPLES), "-n", "demo")
    assert result.code == 0, result.err
    rendered = [doc for doc in yaml.safe_load_all(result.out) if doc]
    decision = decide("demo", store_of(EXAMPLES).namespace("demo"), OperatorSettings(), NOW)
    assert sorted(map(_strip_uids, rendered)) == sorted(map(_strip_uids, decision.apply))


def test_configs_only_prints_valid_gateway_configs(tiergate: Callable[..., Result]) -> None:
    result = tiergate("render", "-f", str(EXAMPLES), "-n", "demo", "--configs-only", "-o", "json")
    assert result.code == 0, result.err
    configs = [GatewayConfig.model_validate(item) for item in json.loads(result.out)["items"]]
    assert [c.gateway for c in configs] == ["tiergate-enterprise-acme", "tiergate-shared"]
    assert "tg-startup-fake-key-0001" not in result.out  # keys only as digests


def test_a_missing_secret_is_reported_and_the_rest_still_printed(
    tiergate: Callable[..., Result], tmp_path: Path
) -> None:
    shutil.copytree(EXAMPLES, tmp_path, dirs_exist_ok=True)
    (tmp_path / "startup-keys.yaml").unlink()
    result = tiergate("render", "-f", str(tmp_path), "-n", "demo")
    assert result.code == 1
    assert f"{tmp_path / 'startup.yaml'}:1: ApiKeyTier demo/startup: MissingSecret" in result.err
    names = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.out) if d}
    assert ("Deployment", "tiergate-enterprise-acme") in names
    configs = tiergate(
        "render", "-f", str(tmp_path), "-n", "demo", "--configs-only", "-o", "json"
    ).out
    shared = next(c for c in json.loads(configs)["items"] if c["gateway"] == "tiergate-shared")
    assert shared["tiers"] == []  # offline there is no last good entry to keep serving


def test_unparsable_yaml_names_file_and_line(
    tiergate: Callable[..., Result], tmp_path: Path
) -> None:
    (tmp_path / "broken.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n  bad: [a\n"
    )
    result = tiergate("render", "-f", str(tmp_path))
    assert result.code == 2
    assert result.err.startswith(f"tiergate: {tmp_path / 'broken.yaml'}:")
    assert "invalid YAML" in result.err


def test_an_invalid_spec_names_the_field(tiergate: Callable[..., Result], tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path, dirs_exist_ok=True)
    route = tmp_path / "deepseek-chat.yaml"
    route.write_text(route.read_text().replace("weight: 80", "weight: eighty"))
    result = tiergate("render", "-f", str(tmp_path))
    assert result.code == 1
    assert "ModelRoute default/deepseek-chat: InvalidSpec: spec.targets.0.weight" in result.err


def test_a_manifest_without_a_name_or_in_another_namespace(
    tiergate: Callable[..., Result], tmp_path: Path
) -> None:
    (tmp_path / "a.yaml").write_text(
        "---\n# nothing\n---\napiVersion: v1\nkind: Secret\nmetadata: {}\n"
    )
    assert "a.yaml:4: Secret has no metadata.name" in tiergate("render", "-f", str(tmp_path)).err
    (tmp_path / "a.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: x}\n"
    )
    assert (
        "in namespace 'x', not 'demo'" in tiergate("render", "-f", str(tmp_path), "-n", "demo").err
    )
    assert "no such file" in tiergate("render", "-f", str(tmp_path / "nope")).err


def test_a_key_value_that_can_be_no_key_is_reported_like_the_operator_does(
    tiergate: Callable[..., Result], tmp_path: Path
) -> None:
    """As `kubectl create secret --from-file` gives it (a trailing newline), next to a blank
    value and a good key: the problem names the Secret and data key, never the values."""
    shutil.copytree(EXAMPLES, tmp_path, dirs_exist_ok=True)
    from_file = base64.b64encode(b"tg-startup-from-file-0002\n").decode()
    (tmp_path / "startup-keys.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: startup-keys\n"
        f"data:\n  key-2: {from_file}\n  key-3: ''\n"
        "stringData:\n  key-1: tg-startup-fake-key-0001\n"
    )
    result = tiergate("render", "-f", str(tmp_path), "-n", "demo")
    assert result.code == 1
    line, _summary = result.err.splitlines()
    assert line.startswith(f"[render] {tmp_path / 'startup.yaml'}:1: ApiKeyTier demo/startup:")
    assert (
        "InvalidKey: not a client key: Secret startup-keys data key key-2 ends with a newline"
        in line
    )
    assert "Secret startup-keys data key key-3 is empty" in line
    assert "the tier's other key keeps working" in line
    configs = tiergate("render", "-f", str(tmp_path), "-n", "demo", "--configs-only", "-o", "json")
    shared = next(c for c in json.loads(configs.out)["items"] if c["gateway"] == "tiergate-shared")
    assert [t["key_sha256"] for t in shared["tiers"]] == [
        [hash_client_key("tg-startup-fake-key-0001")]
    ]
    for output in (result.out, result.err, configs.out, configs.err):
        assert "tg-startup-from-file-0002" not in output
        assert from_file not in output
