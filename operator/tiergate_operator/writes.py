"""Acting: the writes of a decision, group by group, through ``KubeApi`` (the only I/O of a pass
besides ``probe``, which asks who holds the names the watches do not show).

Ownership is checked again at the moment of writing: a create that meets a taken name
(409) applies only if the object holding it is ours, an apply carries its object's uid
(409 if the object was replaced), a delete has its uid as a precondition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from tiergate_operator.changes import (
    NAMESPACE_ACCESS,
    Create,
    Deletion,
    GroupWrites,
    HandOver,
    Write,
    api_failure,
    name_conflict,
    written_kind,
)
from tiergate_operator.kube import Conflict, KubeApi, KubeError
from tiergate_operator.ownership import is_ours
from tiergate_operator.plans import Failure
from tiergate_operator.refs import ObjectRef
from tiergate_operator.registry import CONFIG_MAP, ROLE, SERVICE_ACCOUNT
from tiergate_operator.statuses import StatusChange
from tiergate_operator.store import ChildKey

__all__ = [
    "REFERENCED_KINDS",
    "Outcome",
    "carry_out",
    "probe",
    "write_failure",
    "write_statuses",
]

logger = logging.getLogger("tiergate.reconcile")

Body = dict[str, Any]
T = TypeVar("T")

# What others refer to goes first: a ConfigMap before the workload that reads it (a new
# pod never starts on a stale config), a Role before its RoleBinding (without it, the
# API server's escalation check refuses the binding to an unprivileged operator).
REFERENCED_KINDS = frozenset({CONFIG_MAP.kind, SERVICE_ACCOUNT.kind, ROLE.kind})


def write_failure(action: str, kind: str, name: str, error: KubeError) -> Failure:
    return api_failure(action, kind, name, error.status, error.reason, error.message)


@dataclass
class Outcome:
    """What ``act`` did: the objects as the API server answered, per group what failed,
    and the deletions that failed."""

    written: list[Body] = field(default_factory=list)
    failed: dict[str, Failure] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)


class _Refused(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


async def _bounded(limit: asyncio.Semaphore, call: Awaitable[T]) -> T:
    async with limit:
        return await call


async def probe(
    kube: KubeApi, refs: Iterable[ObjectRef], concurrency: int = 16
) -> dict[ChildKey, Body | Failure]:
    """Who holds each name (metadata only), or why asking failed; free names are left out."""
    limit = asyncio.Semaphore(concurrency)

    async def holder(ref: ObjectRef) -> Body | Failure | None:
        try:
            return await _bounded(limit, kube.get_metadata(ref))
        except KubeError as error:
            return write_failure("checking who holds", ref.kind, ref.name, error)

    refs = list(refs)
    answers = await asyncio.gather(*(holder(ref) for ref in refs))
    return {
        (ref.kind, ref.name): answer
        for ref, answer in zip(refs, answers, strict=True)
        if answer is not None
    }


async def _holder_if_ours(kube: KubeApi, manifest: Body, group: str) -> Body | None:
    """After a 409: the object now holding the name if it is ours, None if there is none;
    refused as a name conflict if it is someone else's."""
    holder = await kube.get_metadata(ObjectRef.of(manifest))
    if holder is not None and not is_ours(holder):
        raise _Refused(name_conflict(group, [holder]))
    return holder


async def _create(kube: KubeApi, manifest: Body, group: str) -> Body:
    try:
        created = await kube.create(manifest)
    except Conflict:  # AlreadyExists: ours (a create the watch has not shown yet), or not
        holder = await _holder_if_ours(kube, manifest, group)
        if holder is None:
            raise
        return await kube.apply(manifest, str(holder["metadata"]["uid"]))
    with contextlib.suppress(KubeError):  # the object moved on: a later pass hands over
        return await kube.hand_fields_to_apply(created)
    return created


async def _apply(kube: KubeApi, manifest: Body, uid: str, group: str) -> Body:
    try:
        return await kube.apply(manifest, uid)
    except Conflict:  # uid mismatch: our object is gone, or something replaced it
        holder = await _holder_if_ours(kube, manifest, group)
        if holder is None:
            return await _create(kube, manifest, group)
        return await kube.apply(manifest, str(holder["metadata"]["uid"]))


async def _hand_over(kube: KubeApi, body: Body) -> Body | None:
    try:
        return await kube.hand_fields_to_apply(body)
    except KubeError as error:  # a stale body: a later pass hands the fields over
        logger.debug("handing over the fields of %s %s: %s", body["kind"], body["metadata"], error)
        return None


async def _write(kube: KubeApi, write: Write, group: str) -> Body | None:
    if isinstance(write, HandOver):
        return await _hand_over(kube, write.body)
    manifest = write.manifest
    try:
        if isinstance(write, Create):
            return await _create(kube, manifest, group)
        return await _apply(kube, manifest, write.uid, group)
    except KubeError as error:
        action = "creating" if isinstance(write, Create) else "applying"
        raise _Refused(
            write_failure(action, manifest["kind"], manifest["metadata"]["name"], error)
        ) from error


async def _write_group(
    kube: KubeApi, group: GroupWrites, limit: asyncio.Semaphore, outcome: Outcome
) -> None:
    """Referenced objects first, then the rest; a group stops at its first failure."""
    first = [w for w in group.writes if written_kind(w) in REFERENCED_KINDS]
    rest = [w for w in group.writes if written_kind(w) not in REFERENCED_KINDS]
    for phase in (first, rest):
        results = await asyncio.gather(
            *(_bounded(limit, _write(kube, w, group.group)) for w in phase),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, _Refused):
                outcome.failed.setdefault(group.group, result.failure)
            elif isinstance(result, BaseException):
                raise result
            elif result:
                outcome.written.append(result)
        if group.group in outcome.failed:
            return


async def carry_out(
    kube: KubeApi,
    groups: Iterable[GroupWrites],
    deletions: Iterable[Deletion],
    concurrency: int = 16,
) -> Outcome:
    """Carry out a decision's writes and deletions (statuses: ``write_statuses``).

    The namespace access goes first (every gateway needs it: if it fails, no gateway is
    written); then each gateway's group, concurrently; a failure stops only its group.
    Deletions of a failed group's objects wait for a pass where its writes succeed.
    """
    limit = asyncio.Semaphore(concurrency)
    outcome = Outcome()
    groups = list(groups)
    for group in (g for g in groups if g.group == NAMESPACE_ACCESS):
        await _write_group(kube, group, limit, outcome)
    if NAMESPACE_ACCESS not in outcome.failed:
        gateways = [g for g in groups if g.group != NAMESPACE_ACCESS]
        await asyncio.gather(*(_write_group(kube, g, limit, outcome) for g in gateways))
    deletions = [d for d in deletions if d.group not in outcome.failed]
    results = await asyncio.gather(
        *(_bounded(limit, kube.delete(d.ref, d.uid or None)) for d in deletions),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, KubeError):
            outcome.errors.append(result)
        elif isinstance(result, BaseException):
            raise result
    return outcome


async def write_statuses(
    kube: KubeApi, changes: Iterable[StatusChange], now: datetime, concurrency: int = 16
) -> tuple[list[Body], list[BaseException]]:
    """Patch each status (and post its Warning event); one failure stops no other.
    Returns the patched objects and the failures."""
    limit = asyncio.Semaphore(concurrency)

    async def one(change: StatusChange) -> Body:
        patched = await kube.patch_status(change.ref, change.status)
        warnings = ((change.warning,) if change.warning else ()) + change.key_warnings
        for reason, message in warnings:
            try:
                await kube.event(
                    change.body, type_="Warning", reason=reason, message=message, now=now
                )
            except KubeError as error:
                logger.warning("posting a %s event about %s failed: %s", reason, change.ref, error)
        return patched

    results = await asyncio.gather(
        *(_bounded(limit, one(c)) for c in changes), return_exceptions=True
    )
    patched: list[Body] = []
    errors: list[BaseException] = []
    for result in results:
        if isinstance(result, KubeError):
            errors.append(result)
        elif isinstance(result, BaseException):
            raise result
        else:
            patched.append(result)
    return patched, errors
