"""What one reconcile pass writes, group by group, and how a group that failed is retried (pure).

Writes are grouped per gateway (its ConfigMap, Deployment, Service, PDB, HPA), plus one
group for the ServiceAccount, Role and RoleBinding every gateway of a namespace shares
(``NAMESPACE_ACCESS``), plus one per tier's PrometheusRule (``rule_group``): a rule that
cannot be written never holds its tier's gateway back. A group is written whole or not at all: a name someone else holds
blocks its group, and a failed write stops it. A failed group is retried with backoff
(``Retry``), at once when what it should hold changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from tiergate_operator.conditions import format_time
from tiergate_operator.ownership import describe_holder
from tiergate_operator.plans import Failure
from tiergate_operator.refs import ObjectRef

__all__ = [
    "MAX_BACKOFF_SECONDS",
    "NAMESPACE_ACCESS",
    "NAME_CONFLICT",
    "WRITE_FAILED",
    "Apply",
    "Create",
    "Deletion",
    "GroupWrites",
    "HandOver",
    "Retry",
    "Write",
    "api_failure",
    "backoff",
    "fingerprint",
    "is_transient",
    "name_conflict",
    "rule_group",
    "written_kind",
]

Body = dict[str, Any]

# The group of the access objects every gateway of a namespace shares (not a DNS name, so
# never a gateway's).
NAMESPACE_ACCESS = "(namespace access)"
_RULE_GROUP = "(slo rules) "
NAME_CONFLICT = "GatewayNameConflict"
WRITE_FAILED = "GatewayWriteFailed"
MAX_BACKOFF_SECONDS = 120
_MESSAGE_LIMIT = 400


@dataclass(frozen=True)
class Create:
    """A name the store does not know as ours: a plain create (409 if someone holds it)."""

    manifest: Body


@dataclass(frozen=True)
class Apply:
    """An object of ours (``uid``) that no longer holds its manifest: server-side apply."""

    manifest: Body
    uid: str


@dataclass(frozen=True)
class HandOver:
    """An object of ours whose create-time fields still belong to an Update entry: hand them
    to our apply manager, so later applies can remove fields."""

    body: Body


Write = Create | Apply | HandOver


def written_kind(write: Write) -> str:
    return str((write.body if isinstance(write, HandOver) else write.manifest)["kind"])


@dataclass(frozen=True)
class GroupWrites:
    group: str  # a gateway, or NAMESPACE_ACCESS
    writes: tuple[Write, ...]


@dataclass(frozen=True)
class Deletion:
    """An object of ours nobody wants; ``uid`` is the delete's precondition."""

    ref: ObjectRef
    uid: str
    group: str


def backoff(attempts: int) -> timedelta:
    """2, 4, 8, ... seconds after the attempts so far, at most MAX_BACKOFF_SECONDS."""
    return timedelta(seconds=min(MAX_BACKOFF_SECONDS, 2 ** min(attempts, 16)))


@dataclass(frozen=True)
class Retry:
    """A group that could not be written: held back until ``next_attempt``, unless what it
    should hold changes (``fingerprint``)."""

    failure: Failure
    fingerprint: str
    attempts: int
    next_attempt: datetime

    def holds_back(self, fingerprint: str, now: datetime) -> bool:
        return fingerprint == self.fingerprint and now < self.next_attempt

    def after(self, failure: Failure, fingerprint: str, now: datetime) -> Retry:
        """One more failed attempt."""
        attempts = self.attempts + 1
        return Retry(failure, fingerprint, attempts, now + backoff(attempts))

    @classmethod
    def first(cls, failure: Failure, fingerprint: str, now: datetime) -> Retry:
        return cls(failure, fingerprint, 1, now + backoff(1))

    def reported(self) -> Failure:
        """The failure, with the retries in its message (what the condition shows)."""
        tries = "1 attempt" if self.attempts == 1 else f"{self.attempts} attempts"
        message = (
            f"{self.failure.message}; {tries} failed, next attempt "
            f"{self.attempts + 1} at {format_time(self.next_attempt)} (backoff)"
        )
        return replace(self.failure, message=message)


def _key(body: Body) -> tuple[str, str]:
    return (str(body["kind"]), str(body["metadata"]["name"]))


def fingerprint(manifests: Iterable[Body]) -> str:
    """Identifies what a group should hold: a held-back group is retried at once when it changes."""
    text = json.dumps(sorted(manifests, key=_key), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def rule_group(tier: str) -> str:
    """The group of a tier's PrometheusRule (not a DNS name, so never a gateway's)."""
    return _RULE_GROUP + tier


def name_conflict(group: str, holders: Iterable[Body]) -> Failure:
    """Names held by objects tiergate did not create: which, by whom, and what to do."""
    held = sorted(holders, key=_key)
    named = " and ".join(
        f"{b['kind']} {b['metadata']['name']} ({describe_holder(b)})" for b in held
    )
    verb = "exists" if len(held) == 1 else "exist"
    if group == NAMESPACE_ACCESS:
        service_account = held[0]["metadata"]["name"]  # the access objects all bear its name
        consequence = (
            f"the gateways of this namespace run as ServiceAccount {service_account} with that "
            "Role and RoleBinding, so no gateway here is written while someone else holds the "
            "name: delete or rename it, or give the operator another name "
            "(TIERGATE_GATEWAY_SERVICE_ACCOUNT)"
        )
    elif group.startswith(_RULE_GROUP):
        consequence = (
            "the tier's SLO alerts are not written while someone else holds the name (its "
            "gateway is served as usual): delete or rename that object (tiergate never takes "
            "over an object it did not create)"
        )
    else:
        consequence = (
            f"nothing of gateway {group} is written while someone else holds its name: "
            "delete or rename that object (tiergate never takes over an object it did not create)"
        )
    return Failure(
        NAME_CONFLICT, f"{named} already {verb} and was not created by tiergate; {consequence}"
    )


def is_transient(status: int, reason: str) -> bool:
    """Worth retrying as is: no answer (status 0), throttling, a server-side error, an
    optimistic-lock conflict. Anything else is a refusal someone must look at."""
    return status in (0, 429) or status >= 500 or (status == 409 and reason == "Conflict")


def _summary(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MESSAGE_LIMIT else flat[: _MESSAGE_LIMIT - 1] + "…"


def api_failure(
    action: str, kind: str, name: str, status: int, reason: str, message: str
) -> Failure:
    """What the API server said about one write: its reason, code and message, summarised.
    (The operator writes no secret, so an API message about its objects quotes none.)"""
    said = f"{reason or 'error'} ({status or 'no answer'})"
    return Failure(
        WRITE_FAILED,
        f"{action} {kind} {name} failed: {said}: {_summary(message)}",
        transient=is_transient(status, reason),
    )
