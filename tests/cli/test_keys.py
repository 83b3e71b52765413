"""``tiergate keys``: new keys are strong, private and accepted; ``check`` finds bad ones."""

from __future__ import annotations

import json
import shutil
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from tests.cli.conftest import Result
from tests.support.kube import EXAMPLES
from tests.support.manifests import store_of, translate_namespace
from tiergate_cli.keys import KEY_PREFIX
from tiergate_contract import hash_client_key

Tiergate = Callable[..., Result]


def _secret_value(path: Path) -> str:
    manifest = yaml.safe_load(path.read_text())
    value: str = manifest["stringData"]["key"]
    return value


def test_a_new_key_is_written_only_to_a_private_file(tiergate: Tiergate, tmp_path: Path) -> None:
    out = tmp_path / "key.yaml"
    result = tiergate("keys", "new", "--tier", "startup", "--team", "search", "-o", str(out))
    assert result.code == 0, result.err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    manifest = yaml.safe_load(out.read_text())
    assert manifest["metadata"] == {
        "name": "startup-key-search",
        "labels": {"tiergate.dev/tier": "startup", "tiergate.dev/team": "search"},
    }
    value = _secret_value(out)
    assert value.startswith(KEY_PREFIX) and len(value) >= len(KEY_PREFIX) + 43  # 256 bits
    assert value not in result.out + result.err, "the key must not reach the terminal"
    assert "sha256:" in result.err and "kubectl apply -f" in result.err


def test_new_keys_differ_and_an_existing_file_is_never_overwritten(
    tiergate: Tiergate, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert tiergate("keys", "new", "--tier", "t", "-o", str(first)).code == 0
    assert tiergate("keys", "new", "--tier", "t", "-o", str(second)).code == 0
    assert _secret_value(first) != _secret_value(second)
    before = first.read_bytes()
    again = tiergate("keys", "new", "--tier", "t", "-o", str(first))
    assert again.code == 2 and "exists" in again.err
    assert first.read_bytes() == before


def test_stdout_gives_a_manifest_to_pipe_and_stderr_only_a_fingerprint(tiergate: Tiergate) -> None:
    result = tiergate("keys", "new", "--tier", "startup", "-n", "demo", "--stdout")
    assert result.code == 0
    manifest = yaml.safe_load(result.out)
    assert manifest["kind"] == "Secret" and manifest["metadata"]["namespace"] == "demo"
    assert manifest["stringData"]["key"] not in result.err


def test_a_bad_name_is_refused(tiergate: Tiergate, tmp_path: Path) -> None:
    result = tiergate("keys", "new", "--tier", "Not_A_Label", "-o", str(tmp_path / "k.yaml"))
    assert result.code == 2 and "--tier 'Not_A_Label' is not a DNS label" in result.err
    assert not (tmp_path / "k.yaml").exists()


def test_a_new_key_serves_its_tier(tiergate: Tiergate, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo)
    (repo / "startup-keys.yaml").unlink()
    made = tiergate(
        "keys", "new", "--tier", "startup", "--secret", "startup-keys", "-o", str(repo / "k.yaml")
    )
    assert made.code == 0
    translation = translate_namespace(store_of(repo))
    plan = translation.plan("tiergate-shared")
    assert plan is not None
    (startup,) = [tier for tier in plan.config.tiers if tier.name == "startup"]
    assert hash_client_key(_secret_value(repo / "k.yaml")) in startup.key_sha256
    assert tiergate("keys", "check", "-f", str(repo)).code == 0


def test_check_passes_the_examples(tiergate: Tiergate) -> None:
    result = tiergate("keys", "check", "-f", str(EXAMPLES))
    assert result.code == 0, result.out + result.err
    assert "startup-keys" in result.out and "enterprise-acme-keys" in result.out


def test_check_reports_every_bad_key_without_echoing_it(tiergate: Tiergate, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo)
    shared = "tg-shared-by-two-tiers-0001"
    (repo / "startup-keys.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "startup-keys"},
                "stringData": {"from-file": "tg-newline-0001\n", "blank": "  ", "shared": shared},
            }
        )
    )
    acme_keys, *others = yaml.safe_load_all((repo / "enterprise-acme-keys.yaml").read_text())
    acme_keys["stringData"]["shared"] = shared
    (repo / "enterprise-acme-keys.yaml").write_text(yaml.safe_dump_all([acme_keys, *others]))
    result = tiergate("keys", "check", "-f", str(repo))
    assert result.code == 1
    assert "key 'from-file' ends with a newline" in result.out
    assert "key 'blank' is only whitespace" in result.out
    assert "key 'shared' is also a key of tier enterprise-acme" in result.out
    assert "key 'shared' is also a key of tier startup" in result.out
    assert "tg-newline-0001" not in result.out + result.err
    assert shared not in result.out + result.err


def test_check_reports_a_secret_missing_from_the_repository(
    tiergate: Tiergate, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo)
    (repo / "startup-keys.yaml").unlink()
    result = tiergate("keys", "check", "-f", str(repo), "-o", "json")
    assert result.code == 1
    assert '"problems": [\n      "Secret not found in the manifests"' in result.out


def _repo_with(tmp_path: Path, startup: dict[str, Any], *secrets: dict[str, Any]) -> Path:
    """The examples with tier startup replaced and more Secrets added."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo)
    (repo / "startup.yaml").write_text(yaml.safe_dump(startup))
    (repo / "more-keys.yaml").write_text(yaml.safe_dump_all(list(secrets)))
    return repo


def _startup(*keys: dict[str, Any], policy: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"isolation": "Shared", "keys": list(keys)}
    if policy:
        spec["keyPolicy"] = policy
    return {
        "apiVersion": "tiergate.dev/v1alpha1",
        "kind": "ApiKeyTier",
        "metadata": {"name": "startup"},
        "spec": spec,
    }


def _key_secret(name: str, created: datetime | None = None, **values: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if created is not None:
        metadata["creationTimestamp"] = _rfc3339(created)
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "stringData": values}


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _rows(out: str) -> dict[str, str]:
    """Each table row by its SECRET column."""
    return {line.split()[2]: line for line in out.splitlines()[1:] if line.strip()}


def test_check_fails_on_expired_and_too_old_secrets_and_warns_of_expiry_soon(
    tiergate: Tiergate, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    repo = _repo_with(
        tmp_path,
        _startup(
            {"secretRef": {"name": "startup-keys"}, "expiresAt": "2020-01-01T00:00:00Z"},
            {"secretRef": {"name": "aged"}},
            {"secretRef": {"name": "soon"}, "expiresAt": _rfc3339(now + timedelta(days=3))},
            policy={"maxAgeDays": 90},
        ),
        _key_secret("aged", now - timedelta(days=100), k="tg-aged-0001"),
        _key_secret("soon", now - timedelta(days=1), k="tg-soon-0001"),
    )
    result = tiergate("keys", "check", "-f", str(repo))
    assert result.code == 1
    rows = _rows(result.out)
    assert "2020-01-01T00:00:00Z" in rows["startup-keys"]
    assert "expired at 2020-01-01T00:00:00Z" in rows["startup-keys"]
    assert "100d" in rows["aged"] and "older than keyPolicy.maxAgeDays (90)" in rows["aged"]
    assert "warning: expires within 14 days" in rows["soon"]
    # A warning alone does not fail CI.
    only_soon = _repo_with(
        tmp_path / "2",
        _startup({"secretRef": {"name": "soon"}, "expiresAt": _rfc3339(now + timedelta(days=3))}),
        _key_secret("soon", k="tg-soon-0001"),
    )
    assert tiergate("keys", "check", "-f", str(only_soon)).code == 0


def test_check_shows_grace_days_as_an_expiry(tiergate: Tiergate, tmp_path: Path) -> None:
    created = datetime(2020, 1, 1, tzinfo=UTC)
    repo = _repo_with(
        tmp_path,
        _startup({"secretRef": {"name": "aged"}}, policy={"maxAgeDays": 30, "graceDays": 10}),
        _key_secret("aged", created, k="tg-aged-0001"),
    )
    result = tiergate("keys", "check", "-f", str(repo), "-o", "json")
    assert result.code == 1
    (check,) = [c for c in json.loads(result.out) if c["secret"] == "aged"]
    assert check["expires_at"] == "2020-02-10T00:00:00Z"
    assert "expired at 2020-02-10T00:00:00Z (keyPolicy maxAgeDays + graceDays)" in check["problems"]


def test_a_disabled_reference_is_listed_and_its_secret_counts_for_nothing(
    tiergate: Tiergate, tmp_path: Path
) -> None:
    repo = _repo_with(
        tmp_path,
        _startup(
            {"secretRef": {"name": "startup-keys"}},
            {"secretRef": {"name": "retired"}, "disabled": True},
            {"secretRef": {"name": "gone"}, "disabled": True},
        ),
        # A blank value and a key of another tier: both harmless while disabled.
        _key_secret("retired", blank="", shared="tg-acme-fake-key-0001"),
    )
    result = tiergate("keys", "check", "-f", str(repo))
    assert result.code == 0, result.out
    rows = _rows(result.out)
    assert rows["retired"].endswith("disabled") and rows["gone"].endswith("disabled")


def test_an_emptied_secret_is_a_problem(tiergate: Tiergate, tmp_path: Path) -> None:
    repo = _repo_with(tmp_path, _startup({"secretRef": {"name": "empty"}}), _key_secret("empty"))
    result = tiergate("keys", "check", "-f", str(repo))
    assert result.code == 1 and "holds no key" in _rows(result.out)["empty"]


def test_a_new_key_with_a_lifetime_names_its_expiry_in_the_next_steps(
    tiergate: Tiergate, tmp_path: Path
) -> None:
    out = tmp_path / "key.yaml"
    result = tiergate("keys", "new", "--tier", "startup", "--expires-in", "90", "-o", str(out))
    assert result.code == 0, result.err
    expected = (datetime.now(UTC) + timedelta(days=90)).strftime("%Y-%m-%d")
    assert f"expiresAt: {expected}T" in result.err
    assert _secret_value(out) not in result.err
    bad = tiergate("keys", "new", "--tier", "startup", "--expires-in", "0", "--stdout")
    assert bad.code == 2 and "--expires-in '0' is not a whole number of days" in bad.err
