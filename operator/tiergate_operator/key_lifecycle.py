"""Pure: when each key Secret of a tier stops being accepted, and what the tier says about it.

A key Secret's keys stop at its expiry: ``spec.keys[].expiresAt``, or, when the tier's
``keyPolicy`` sets ``graceDays``, its creation time + ``maxAgeDays`` + ``graceDays``,
whichever comes first. The config carries that moment and each gateway enforces it by its
own clock, so nothing is written at the moment itself; the operator only reports:
``KeysExpiringSoon`` (a Secret expires within ``expiryWarningDays``, or has expired) and
``KeyRotationDue`` (a Secret is older than ``maxAgeDays``), each with a Warning event when
it turns True or names other Secrets. Messages hold absolute times only, so a status is
rewritten when what it says changes, not as time passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from tiergate_operator.conditions import format_time, set_condition
from tiergate_operator.models import (
    ApiKeyTier,
    ApiKeyTierSpec,
    Condition,
    ConditionStatus,
    KeyPolicy,
)

__all__ = [
    "EXPIRING_SOON",
    "ROTATION_DUE",
    "KeySecret",
    "key_conditions",
    "key_secrets",
    "next_key_moment",
    "parse_time",
    "tier_spec",
]

EXPIRING_SOON = "KeysExpiringSoon"
ROTATION_DUE = "KeyRotationDue"
_State = tuple[ConditionStatus, str, str]  # status, reason, message


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp (as metadata.creationTimestamp) in UTC, or None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return None


def tier_spec(body: Mapping[str, Any]) -> ApiKeyTierSpec | None:
    """The spec of a stored ApiKeyTier, or None when it does not parse (or is being deleted)."""
    if body.get("metadata", {}).get("deletionTimestamp"):
        return None
    try:
        return ApiKeyTier.model_validate(body).spec
    except ValidationError:
        return None


@dataclass(frozen=True)
class KeySecret:
    """One key Secret reference of a tier, with the moments that matter for it."""

    name: str
    disabled: bool
    created: datetime | None  # None: the Secret is unknown (or its creation time is)
    expires_at: datetime | None  # when its keys stop; None: never
    by_policy: bool  # ``expires_at`` is the key policy's refusal, not ``expiresAt``

    def age_days(self, now: datetime) -> int | None:
        return None if self.created is None else max(0, (now - self.created).days)


def _policy(spec: ApiKeyTierSpec) -> KeyPolicy:
    return spec.key_policy or KeyPolicy()


def key_secrets(spec: ApiKeyTierSpec, created: Mapping[str, str]) -> list[KeySecret]:
    """The tier's key Secret references, with their creation time and effective expiry."""
    policy = _policy(spec)
    found = []
    for source in spec.keys:
        name = source.secret_ref.name
        born = parse_time(created.get(name))
        stated = source.expiry
        refused = (
            born + timedelta(days=policy.max_age_days + policy.grace_days)
            if born is not None
            and policy.max_age_days is not None
            and policy.grace_days is not None
            else None
        )
        by_policy = refused is not None and (stated is None or refused < stated)
        found.append(
            KeySecret(
                name, bool(source.disabled), born, refused if by_policy else stated, by_policy
            )
        )
    return found


def _expiry_note(secret: KeySecret, now: datetime) -> str:
    moment = format_time(secret.expires_at) if secret.expires_at else "-"
    why = " (keyPolicy: maxAgeDays + graceDays)" if secret.by_policy else ""
    verb = "expired" if secret.expires_at and secret.expires_at <= now else "expires"
    return f"Secret {secret.name} {verb} at {moment}{why}"


def _expiring(secrets: Sequence[KeySecret], policy: KeyPolicy, now: datetime) -> _State:
    window = timedelta(days=policy.expiry_warning_days)
    soon = sorted(
        (s for s in secrets if s.expires_at is not None and s.expires_at <= now + window),
        key=lambda s: (s.expires_at, s.name),
    )
    if not soon:
        return (
            "False",
            "NoneExpiringSoon",
            (f"no enabled key Secret expires within {policy.expiry_warning_days} days"),
        )
    expired = any(s.expires_at is not None and s.expires_at <= now for s in soon)
    notes = "; ".join(_expiry_note(s, now) for s in soon)
    reason = "KeysExpired" if expired else "ExpiringSoon"
    return (
        "True",
        reason,
        (
            f"{notes}: clients of those keys get 401 key_expired from then on; "
            "rotate: add a new key Secret, move clients, then disable or remove the old"
        ),
    )


def _rotation(secrets: Sequence[KeySecret], max_age_days: int, now: datetime) -> _State:
    limit = timedelta(days=max_age_days)
    old = sorted(
        (s for s in secrets if s.created is not None and now - s.created > limit),
        key=lambda s: s.name,
    )
    if not old:
        return (
            "False",
            "KeysWithinMaxAge",
            f"every enabled key Secret is at most {max_age_days} days old",
        )
    named = "; ".join(
        f"Secret {s.name} created at {format_time(s.created)}" for s in old if s.created
    )
    return (
        "True",
        "MaxAgeExceeded",
        (
            f"key Secrets older than keyPolicy.maxAgeDays ({max_age_days}): {named}; "
            "rotate: add a new key Secret, move clients, then disable or remove the old"
        ),
    )


def key_conditions(
    conditions: Sequence[Condition],
    spec: ApiKeyTierSpec | None,
    created: Mapping[str, str],
    generation: int,
    now: datetime,
) -> tuple[list[Condition], list[tuple[str, str]]]:
    """``conditions`` with the tier's key conditions set, and the Warning events to post.

    ``KeysExpiringSoon`` is shown when a reference of the tier can expire (``expiresAt``, or
    ``graceDays``), ``KeyRotationDue`` when ``maxAgeDays`` is set; otherwise each is removed.
    Disabled references concern nobody and are left out. ``spec`` None: the tier does not
    parse, its key conditions stay as they are.
    """
    if spec is None:
        return list(conditions), []
    policy = _policy(spec)
    enabled = [s for s in key_secrets(spec, created) if not s.disabled]
    wanted: dict[str, _State] = {}
    if any(source.expires_at for source in spec.keys) or policy.grace_days is not None:
        wanted[EXPIRING_SOON] = _expiring(enabled, policy, now)
    if policy.max_age_days is not None:
        wanted[ROTATION_DUE] = _rotation(enabled, policy.max_age_days, now)
    updated = [c for c in conditions if c.type not in {EXPIRING_SOON, ROTATION_DUE} - set(wanted)]
    warnings = []
    for type_, (status, reason, message) in wanted.items():
        before = next((c for c in updated if c.type == type_), None)
        updated = set_condition(updated, type_, status, reason, message, generation, now)
        changed = before is None or (before.status, before.reason, before.message) != (
            status,
            reason,
            message,
        )
        if status == "True" and changed:
            warnings.append((reason, message))
    return updated, warnings


def next_key_moment(
    specs: Iterable[ApiKeyTierSpec], created: Mapping[str, str], now: datetime
) -> datetime | None:
    """The next moment after ``now`` at which a key condition of these tiers may change: a
    Secret entering its warning window, expiring, or growing older than ``maxAgeDays``."""
    moments: list[datetime] = []
    for spec in specs:
        policy = _policy(spec)
        for secret in key_secrets(spec, created):
            if secret.disabled:
                continue
            if secret.expires_at is not None:
                window = timedelta(days=policy.expiry_warning_days)
                moments += [secret.expires_at - window, secret.expires_at]
            if secret.created is not None and policy.max_age_days is not None:
                moments.append(secret.created + timedelta(days=policy.max_age_days, seconds=1))
    return min((m for m in moments if m > now), default=None)
