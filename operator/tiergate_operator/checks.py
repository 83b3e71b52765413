"""Semantic checks a schema cannot make: references to Secrets and routes, clashes between objects.

Each check records at most one ``Problem`` per object (the first found) and returns the
objects that parsed, so a broken object can still be placed on its gateway.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from tiergate_contract import MAX_KEYS_PER_TIER, KeyExpiry, KeyName
from tiergate_operator.key_lifecycle import key_secrets
from tiergate_operator.models import ApiKeyTier, ModelRoute, SecretKeyRef
from tiergate_operator.plans import Problem
from tiergate_operator.store import not_a_key_because

__all__ = ["ServedKeys", "check_routes", "check_tiers", "invalid_spec", "redis_secret_problem"]

Body = Mapping[str, Any]
# Secret name -> {data key -> digest of a client key, or why the value is none} (the store's
# ``secret_digests``).
SecretDigests = Mapping[str, Mapping[str, str]]
# How many values an InvalidKey message names; the rest are counted.
_LISTED_NOT_KEYS = 5


def invalid_spec(error: ValidationError) -> Problem:
    details = "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'object'}: {e['msg']}"
        for e in error.errors()[:3]
    )
    return Problem("InvalidSpec", details)


def _secret_key_problem(ref: SecretKeyRef, secrets: SecretDigests, purpose: str) -> Problem | None:
    if ref.name not in secrets:
        return Problem("MissingSecret", f"Secret {ref.name} ({purpose}) does not exist")
    if ref.key not in secrets[ref.name]:
        return Problem("MissingSecretKey", f"Secret {ref.name} ({purpose}) has no key {ref.key}")
    return None


def redis_secret_problem(ref: SecretKeyRef, secrets: SecretDigests) -> Problem | None:
    """The Secret holding the gateways' Redis URL must exist in each gateway namespace: the
    gateway pods read it (secretKeyRef); the operator only sees that it is there."""
    return _secret_key_problem(
        ref,
        secrets,
        "the gateways' Redis URL, named by the operator's TIERGATE_REDIS_SECRET_NAME; "
        "create it in this namespace",
    )


def _first(problems: Iterable[Problem | None]) -> Problem | None:
    return next((problem for problem in problems if problem is not None), None)


def _mark_shared(
    claims: Mapping[str, Sequence[str]], problems: dict[str, Problem], reason: str, describe: str
) -> None:
    """Every object sharing a claim with another gets ``reason`` (unless it has a problem already)."""
    for claimants in claims.values():
        if len(claimants) > 1:
            for name in claimants:
                others = ", ".join(sorted(set(claimants) - {name}))
                problems.setdefault(name, Problem(reason, describe.format(others=others)))


def check_routes(
    bodies: Sequence[Body], secrets: SecretDigests, problems: dict[str, Problem]
) -> dict[str, ModelRoute]:
    parsed: dict[str, ModelRoute] = {}
    aliases: dict[str, list[str]] = defaultdict(list)
    for body in bodies:
        name = str(body["metadata"]["name"])
        try:
            route = parsed[name] = ModelRoute.model_validate(body)
        except ValidationError as error:
            problems[name] = invalid_spec(error)
            continue
        for claim in _claims(name, route):
            aliases[claim].append(name)
        problem = _first(
            _secret_key_problem(
                t.credentials_secret_ref, secrets, f"credentials of target {t.name}"
            )
            for t in route.spec.targets
            if t.credentials_secret_ref
        )
        if problem:
            problems[name] = problem
    _mark_shared(
        aliases,
        problems,
        "DuplicateModel",
        "its model alias is also claimed by ModelRoute {others}",
    )
    return parsed


def _claims(name: str, route: ModelRoute) -> list[str]:
    """The names a route answers to: its alias; or a catalog's name (its breakers' and metrics'
    route key), models and patterns (a pattern holds a ``*``, which no name does)."""
    catalog = route.spec.catalog
    if catalog is None:
        return [str(route.spec.model)]
    return [
        name,
        *(m.model for m in catalog.models or ()),
        *(p.pattern for p in catalog.patterns or ()),
    ]


@dataclass(frozen=True)
class _TierKeys:
    """A tier's client keys as the store has them, from its enabled key Secrets: digests with
    their expiry (None: never), and the values that are no key."""

    expiries: Mapping[str, datetime | None]
    not_keys: tuple[str, ...]  # "Secret <name> data key <key> <why>", never a value
    # digest -> "<Secret>/<data key>" it comes from (the first by name when several hold it).
    names: Mapping[str, str] = field(default_factory=dict)

    @property
    def digests(self) -> frozenset[str]:
        return frozenset(self.expiries)


@dataclass(frozen=True)
class ServedKeys:
    """The client keys a tier is served with: digests, sorted, and the expiry of those that expire."""

    digests: tuple[str, ...]
    expiry: tuple[KeyExpiry, ...] = ()
    names: tuple[KeyName, ...] = ()  # sorted by digest


def _later(first: datetime | None, second: datetime | None) -> datetime | None:
    """A key held by two Secrets of a tier holds as long as either does."""
    return None if first is None or second is None else max(first, second)


def _tier_keys(tier: ApiKeyTier, secrets: SecretDigests, created: Mapping[str, str]) -> _TierKeys:
    expiries: dict[str, datetime | None] = {}
    names: dict[str, str] = {}
    not_keys: list[str] = []
    for source in key_secrets(tier.spec, created):
        if source.disabled:
            continue
        for data_key, entry in sorted(secrets[source.name].items()):
            why = not_a_key_because(entry)
            if why is None:
                held = expiries.get(entry, source.expires_at)
                expiries[entry] = _later(held, source.expires_at)
                name = f"{source.name}/{data_key}"
                names[entry] = min(names.get(entry, name), name)
            else:
                not_keys.append(f"Secret {source.name} data key {data_key} {why}")
    return _TierKeys(expiries, tuple(not_keys), names)


def _served(keys: _TierKeys) -> ServedKeys:
    return ServedKeys(
        digests=tuple(sorted(keys.expiries)),
        expiry=tuple(
            KeyExpiry(sha256=digest, expires_at=moment)
            for digest, moment in sorted(keys.expiries.items())
            if moment is not None
        ),
        names=tuple(
            KeyName(sha256=digest, name=name) for digest, name in sorted(keys.names.items())
        ),
    )


def _invalid_keys(keys: _TierKeys) -> Problem:
    """``InvalidKey``: which values are no client key and why, never the values themselves."""
    listed = "; ".join(keys.not_keys[:_LISTED_NOT_KEYS])
    if len(keys.not_keys) > _LISTED_NOT_KEYS:
        listed += f"; and {len(keys.not_keys) - _LISTED_NOT_KEYS} more"
    hint = (
        " (kubectl create secret --from-file keeps the file's last newline: use "
        "--from-literal, or a file without one)"
        if any(text.endswith("ends with a newline") for text in keys.not_keys)
        else ""
    )
    usable = len(keys.digests)
    outcome = {
        0: "the tier has no usable client key",
        1: "left out of the config; the tier's other key keeps working",
    }.get(usable, f"left out of the config; the tier's {usable} other keys keep working")
    return Problem("InvalidKey", f"not a client key: {listed}{hint}; {outcome}")


def _tier_problem(
    tier: ApiKeyTier,
    route_names: Sequence[str],
    catalog_names: Collection[str],
    secrets: SecretDigests,
) -> Problem | None:
    """A problem that keeps the tier's current spec from being served at all."""
    spec = tier.spec
    if spec.models is not None and not spec.models:
        return Problem(
            "EmptyAllowlist",
            "models is an empty list: the tier may use no route "
            "(omit models to allow every route of the namespace)",
        )
    unknown = sorted(set(spec.models or ()) - set(route_names))
    if unknown:
        return Problem(
            "UnknownRoute", f"models names ModelRoutes that do not exist: {', '.join(unknown)}"
        )
    narrowed = [c.route for c in spec.catalogs or ()]
    unknown = sorted(set(narrowed) - set(route_names))
    if unknown:
        return Problem(
            "UnknownRoute", f"catalogs names ModelRoutes that do not exist: {', '.join(unknown)}"
        )
    plain = sorted(set(narrowed) - set(catalog_names))
    if plain:
        return Problem(
            "NotACatalog",
            f"catalogs names ModelRoutes without a catalog: {', '.join(plain)} "
            "(allow them in models; only a catalog narrows to some of its models)",
        )
    enabled = [key.secret_ref.name for key in spec.keys if not key.disabled]
    missing = [name for name in enabled if name not in secrets]
    if missing:
        return Problem("MissingSecret", f"key Secret {', '.join(missing)} does not exist")
    upstream = spec.upstream.credentials_secret_ref if spec.upstream else None
    return _secret_key_problem(upstream, secrets, "upstream credentials") if upstream else None


def _no_keys(tier: ApiKeyTier) -> Problem:
    """Served with no key at all: revoking every key must not leave the last good ones working."""
    if all(key.disabled for key in tier.spec.keys):
        return Problem(
            "NoKeys",
            "every key Secret of the tier is disabled: the gateways accept none of its keys",
        )
    return Problem(
        "NoKeys",
        "the enabled key Secrets hold no keys: the gateways accept none of the tier's keys",
    )


def _usable_keys(
    tier: ApiKeyTier,
    route_names: Sequence[str],
    catalog_names: Collection[str],
    secrets: SecretDigests,
    created: Mapping[str, str],
) -> _TierKeys | Problem:
    """The tier's keys when it can be served as specified, else why not."""
    problem = _tier_problem(tier, route_names, catalog_names, secrets)
    if problem is not None:
        return problem
    keys = _tier_keys(tier, secrets, created)
    if not keys.digests and keys.not_keys:
        return _invalid_keys(keys)
    if len(keys.digests) > MAX_KEYS_PER_TIER:
        return Problem(
            "TooManyKeys",
            f"the tier's key Secrets hold {len(keys.digests)} client keys; a tier holds at most "
            f"{MAX_KEYS_PER_TIER}: split the keys over several tiers",
        )
    return keys


def check_tiers(
    bodies: Sequence[Body],
    route_names: Sequence[str],
    secrets: SecretDigests,
    problems: dict[str, Problem],
    created: Mapping[str, str] | None = None,
    catalog_names: Collection[str] = (),
) -> tuple[dict[str, ApiKeyTier], dict[str, ServedKeys]]:
    """The tiers that parsed, and the client keys of each tier to serve as specified.

    A tier with a problem is not served as specified (its last good entry carries over),
    except for ``InvalidKey`` with usable keys left: some values of its key Secrets are no
    key (each is left out) and it is served with the others, while it reports the problem;
    and ``NoKeys``: its enabled key Secrets hold no key (all disabled, values removed), so it
    is served with none. ``created``: each Secret's creationTimestamp, for ``keyPolicy``.
    """
    parsed: dict[str, ApiKeyTier] = {}
    digests: dict[str, ServedKeys] = {}
    owners: dict[str, list[str]] = defaultdict(list)
    invalid_keys: dict[str, Problem] = {}
    for body in bodies:
        name = str(body["metadata"]["name"])
        try:
            tier = parsed[name] = ApiKeyTier.model_validate(body)
        except ValidationError as error:
            problems[name] = invalid_spec(error)
            continue
        keys = _usable_keys(tier, route_names, catalog_names, secrets, created or {})
        if isinstance(keys, Problem):
            problems[name] = keys
            continue
        digests[name] = _served(keys)
        for digest in digests[name].digests:
            owners[digest].append(name)
        if keys.not_keys:
            invalid_keys[name] = _invalid_keys(keys)
        elif not keys.digests:
            invalid_keys[name] = _no_keys(tier)
    _mark_shared(
        owners,
        problems,
        "DuplicateKey",
        "a client key of this tier is also a key of ApiKeyTier {others}",
    )
    served = {name: found for name, found in digests.items() if name not in problems}
    for name, problem in invalid_keys.items():
        problems.setdefault(name, problem)
    return parsed, served
