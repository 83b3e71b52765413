"""``tiergate keys new|check``: make client keys right, and check a repository's keys offline.

``new`` makes a high-entropy key with a recognisable ``tg-`` prefix (``secrets``) and writes
a Secret manifest holding it to a file only you can read (0600), so the key never passes
through a terminal, a log or shell history; ``--stdout`` pipes the manifest into
``kubectl apply -f -`` instead; ``--expires-in DAYS`` gives the tier's ``spec.keys`` entry
to add an ``expiresAt``. ``check`` lists each tier's key Secrets found under DIR, how many
keys each holds, their age (``creationTimestamp``, when the manifest has one), expiry and
whether the reference is disabled, and every problem: a value no client could send (empty,
whitespace, a trailing newline, ...), a key shared by two tiers, a Secret missing from DIR
or holding no key, an expired one, one older than ``keyPolicy.maxAgeDays``; a Secret
expiring within ``keyPolicy.expiryWarningDays`` is a warning. Exit code 1 when there is a
problem, for CI. No value is ever printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tiergate_cli.commands import Commands
from tiergate_cli.manifests import ManifestSet, load_manifests
from tiergate_cli.output import CommandError, dump, note, table
from tiergate_contract import client_key_problem
from tiergate_operator.conditions import format_time
from tiergate_operator.key_lifecycle import KeySecret, key_secrets
from tiergate_operator.models import ApiKeyTier, KeyPolicy
from tiergate_operator.registry import API_KEY_TIER, SECRET, PrefixedKeys
from tiergate_operator.settings import prefix_from_env

__all__ = ["KEY_PREFIX", "SecretCheck", "add_parser", "check_keys", "fingerprint", "new_key"]

KEY_PREFIX = "tg-"
_KEY_BYTES = 32  # 256 bits of entropy
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "keys",
        help="make a client key as a Secret manifest; check a repository's keys",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(title="actions", required=True, metavar="ACTION")
    new = actions.add_parser("new", help="a new client key, written as a Secret manifest")
    new.add_argument("--tier", required=True, help="the ApiKeyTier the key is for")
    new.add_argument("--team", help="who gets the key (part of the Secret's name and labels)")
    new.add_argument("--secret", help="the Secret's name (default: <tier>-key-<team or date>)")
    new.add_argument("-n", "--namespace", help="the Secret's namespace (default: none set)")
    new.add_argument(
        "--expires-in",
        metavar="DAYS",
        help="the key's lifetime: the next steps give the tier's keys entry its expiresAt",
    )
    target = new.add_mutually_exclusive_group()
    target.add_argument(
        "-o", "--output", type=Path, help="where to write the manifest (default: <secret>.yaml)"
    )
    target.add_argument(
        "--stdout",
        action="store_true",
        help="print the manifest on stdout (e.g. | kubectl apply -f -)",
    )
    new.set_defaults(run=_run_new)
    check = actions.add_parser("check", help="each tier's key Secrets and their problems")
    check.add_argument("-f", "--filename", type=Path, required=True, metavar="DIR")
    check.add_argument("-n", "--namespace", help="namespace for objects that set none")
    check.add_argument("-o", "--output", choices=("table", "json"), default="table")
    check.set_defaults(run=_run_check)


# -- new --------------------------------------------------------------------------------


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)


def fingerprint(value: str) -> str:
    """A short digest to tell keys apart in conversations and logs; reveals nothing useful."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


def secret_manifest(
    name: str, tier: str, team: str | None, namespace: str | None, value: str
) -> dict[str, Any]:
    keys = PrefixedKeys(prefix_from_env())
    labels = {keys.tier_label: tier} | ({keys.team_label: team} if team else {})
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if namespace:
        metadata["namespace"] = namespace
    return {
        **SECRET.type_meta(),
        "metadata": metadata,
        "type": "Opaque",
        "stringData": {"key": value},
    }


def keys_entry(secret: str, expires_at: datetime | None) -> str:
    """The ``spec.keys`` entry referring to ``secret``, as YAML flow."""
    if expires_at is None:
        return f"{{secretRef: {{name: {secret}}}}}"
    return f"{{secretRef: {{name: {secret}}}, expiresAt: {format_time(expires_at)}}}"


def _checked_name(value: str, what: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise CommandError(f"{what} {value!r} is not a DNS label (a-z, 0-9, '-', at most 63)")
    return value


def _run_new(args: argparse.Namespace) -> int:
    tier = _checked_name(args.tier, "--tier")
    team = _checked_name(args.team, "--team") if args.team else None
    now = datetime.now(UTC)
    suffix = team or now.strftime("%Y%m%d%H%M%S")
    expires_at = None
    if args.expires_in is not None:
        if not args.expires_in.isdigit() or not 1 <= int(args.expires_in) <= 3650:
            raise CommandError(
                f"--expires-in {args.expires_in!r} is not a whole number of days from 1 to 3650"
            )
        expires_at = now + timedelta(days=int(args.expires_in))
    name = _checked_name(args.secret or f"{tier}-key-{suffix}", "the Secret name")
    value = new_key()
    manifest = dump([secret_manifest(name, tier, team, args.namespace, value)], "yaml")
    if args.stdout:
        sys.stdout.write(manifest)
        note(f"Secret {name}: a new key {fingerprint(value)} for tier {tier}", "keys")
        note(f"next: add {keys_entry(name, expires_at)} to ApiKeyTier {tier}'s spec.keys", "keys")
        return 0
    path: Path = args.output or Path(f"{name}.yaml")
    try:
        # O_EXCL: never overwrite (another key may be in it); 0600 from the first byte on.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CommandError(f"{path} exists: choose another --output or --secret") from None
    with os.fdopen(descriptor, "w") as file:
        file.write(manifest)
    namespace = f" -n {args.namespace}" if args.namespace else ""
    note(f"wrote Secret {name} with a new key {fingerprint(value)} to {path} (mode 0600)", "keys")
    note(
        f"next: kubectl apply{namespace} -f {path}; add {keys_entry(name, expires_at)} to "
        f"ApiKeyTier {tier}'s spec.keys; hand the key to {team or 'its user'} over a safe "
        f"channel; then delete {path}",
        "keys",
    )
    return 0


# -- check ------------------------------------------------------------------------------


@dataclass
class SecretCheck:
    """One key Secret a tier refers to, as found in the manifests (never its values)."""

    namespace: str
    tier: str
    secret: str
    keys: int | None = None  # None: the Secret is not in the manifests
    age_days: int | None = None
    expires_at: str | None = None  # RFC 3339, when its keys stop (expiresAt, or the key policy)
    disabled: bool = False
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # shown, but no failure


def _lifetime_problems(
    check: SecretCheck, secret: KeySecret, policy: KeyPolicy, now: datetime
) -> None:
    """Age against ``keyPolicy.maxAgeDays``; expiry (``expiresAt`` or the policy's refusal)."""
    check.age_days = secret.age_days(now)
    if policy.max_age_days is not None and (check.age_days or 0) > policy.max_age_days:
        check.problems.append(f"older than keyPolicy.maxAgeDays ({policy.max_age_days})")
    if secret.expires_at is None:
        return
    check.expires_at = format_time(secret.expires_at)
    why = " (keyPolicy maxAgeDays + graceDays)" if secret.by_policy else ""
    if secret.expires_at <= now:
        check.problems.append(f"expired at {check.expires_at}{why}")
    elif secret.expires_at <= now + timedelta(days=policy.expiry_warning_days):
        check.warnings.append(f"expires within {policy.expiry_warning_days} days{why}")


def check_keys(manifests: ManifestSet, now: datetime) -> list[SecretCheck]:
    """Every key Secret reference of every tier, with its problems. A disabled reference is
    listed, but its Secret may be missing and its values count for nothing."""
    checks: list[SecretCheck] = []
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)  # (ns, sha256) -> tiers
    digests: dict[int, list[tuple[str, str]]] = {}  # id(check) -> [(data key, sha256)]
    for namespace in manifests.namespaces:
        values = manifests.secret_values(namespace)
        bodies = {doc.name: doc.body for doc in manifests.of_kind(SECRET.kind, namespace)}
        created = {
            name: str(body["metadata"]["creationTimestamp"])
            for name, body in bodies.items()
            if body.get("metadata", {}).get("creationTimestamp")
        }
        for doc in manifests.of_kind(API_KEY_TIER.kind, namespace):
            try:
                tier = ApiKeyTier.model_validate(doc.body)
            except ValidationError as error:
                raise CommandError(f"{doc.where}: ApiKeyTier {doc.name}: {error}") from None
            policy = tier.spec.key_policy or KeyPolicy()
            for secret in key_secrets(tier.spec, created):
                name = secret.name
                check = SecretCheck(namespace, doc.name, name, disabled=secret.disabled)
                checks.append(check)
                if name in values:
                    check.keys = len(values[name])
                if secret.disabled:
                    continue
                if name not in values:
                    check.problems.append("Secret not found in the manifests")
                    continue
                _lifetime_problems(check, secret, policy, now)
                digests[id(check)] = []
                for key, value in sorted(values[name].items()):
                    if problem := client_key_problem(value):
                        check.problems.append(f"key {key!r} {problem}")
                        continue
                    digest = hashlib.sha256(value.encode()).hexdigest()
                    owners[(namespace, digest)].add(doc.name)
                    digests[id(check)].append((key, digest))
                if not values[name]:
                    check.problems.append("holds no key")
    for check in checks:
        for key, digest in digests.get(id(check), []):
            others = sorted(owners[(check.namespace, digest)] - {check.tier})
            if others:
                check.problems.append(f"key {key!r} is also a key of tier {', '.join(others)}")
    return checks


def _verdict(check: SecretCheck) -> str:
    said = check.problems + [f"warning: {w}" for w in check.warnings]
    return "; ".join(said) or ("disabled" if check.disabled else "ok")


def _run_check(args: argparse.Namespace) -> int:
    manifests = load_manifests(args.filename, args.namespace)
    checks = check_keys(manifests, datetime.now(UTC))
    if not checks:
        raise CommandError(f"{args.filename}: no ApiKeyTier found")
    if args.output == "json":
        print(json.dumps([asdict(check) for check in checks], indent=2))
    else:
        rows = [
            (
                c.namespace,
                c.tier,
                c.secret,
                "-" if c.keys is None else str(c.keys),
                "-" if c.age_days is None else f"{c.age_days}d",
                c.expires_at or "-",
                _verdict(c),
            )
            for c in checks
        ]
        header = ("NAMESPACE", "TIER", "SECRET", "KEYS", "AGE", "EXPIRES", "PROBLEMS")
        print(table(header, rows, right=(3, 4)))
    return 1 if any(check.problems for check in checks) else 0
