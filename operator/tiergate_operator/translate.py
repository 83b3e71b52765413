"""Pure translation: the routes, tiers and Secret digests of one namespace -> gateway plans.

No I/O: the gather step hands over the custom resources as stored bodies, each Secret
as ``{data key: sha256 of value}`` (``contract.hash_client_key``; a value that can be no
client key is stored as why not instead, see ``store.secret_digests``), and the configs
last applied per gateway. An object with a problem never breaks the others: its
entry from the previous config of its gateway (its last good state) is carried
over, or it is left out when it has none. One problem does not stop a tier from being
served as specified: ``InvalidKey`` with usable keys left (the bad values are left out).
Everything is sorted, so the same inputs give byte-identical configs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

import tiergate_contract as contract
from tiergate_operator.checks import ServedKeys, check_routes, check_tiers, invalid_spec
from tiergate_operator.convert import contract_catalog, contract_route, contract_tier
from tiergate_operator.models import ApiKeyTier
from tiergate_operator.names import SHARED_GATEWAY, gateway_for_tier
from tiergate_operator.plans import GatewayPlan, OwnerRef, Problem, TierObjectives, Translation
from tiergate_operator.registry import API_KEY_TIER

__all__ = ["GatewayPlan", "OwnerRef", "Problem", "SecretDigests", "Translation", "translate"]

Body = Mapping[str, Any]
# Secret name -> {data key -> hex SHA-256 of the value, or why it is no client key}.
SecretDigests = Mapping[str, Mapping[str, str]]


@dataclass
class _Routes:
    """The namespace's routes: fresh contract entries, and aliases of the broken ones."""

    fresh: dict[str, contract.Route] = field(default_factory=dict)  # object name -> route
    broken_aliases: dict[str, str] = field(default_factory=dict)  # object name -> alias
    names: tuple[str, ...] = ()
    # Catalog routes (a catalog's name is its object's): all of them, and the fresh entries.
    catalog_names: frozenset[str] = frozenset()
    catalogs: dict[str, contract.Catalog] = field(default_factory=dict)

    def alias(self, name: str) -> str | None:
        route = self.fresh.get(name)
        return route.model if route else self.broken_aliases.get(name)


def _live(bodies: Iterable[Body]) -> list[Body]:
    return sorted(
        (b for b in bodies if not b.get("metadata", {}).get("deletionTimestamp")),
        key=lambda b: str(b["metadata"]["name"]),
    )


def _gather_routes(
    bodies: list[Body], secrets: SecretDigests, problems: dict[str, Problem]
) -> _Routes:
    parsed = check_routes(bodies, secrets, problems)
    routes = _Routes(
        names=tuple(str(b["metadata"]["name"]) for b in bodies),
        catalog_names=frozenset(
            str(b["metadata"]["name"]) for b in bodies if "catalog" in (b.get("spec") or {})
        ),
    )
    for body in bodies:
        name = str(body["metadata"]["name"])
        route = parsed.get(name)
        if name not in problems and route is not None:
            try:
                if name in routes.catalog_names:
                    routes.catalogs[name] = contract_catalog(name, route.spec)
                else:
                    routes.fresh[name] = contract_route(route.spec)
                continue
            except ValidationError as error:
                problems[name] = invalid_spec(error)
        if name in routes.catalog_names:
            continue  # carried over by name
        alias = route.spec.model if route else (body.get("spec") or {}).get("model")
        if isinstance(alias, str):
            routes.broken_aliases[name] = alias
    return routes


@dataclass
class _GatewayBuilder:
    """Assembles one gateway's config from fresh and carried-over entries."""

    name: str
    routes: _Routes
    previous: contract.GatewayConfig | None
    entries: dict[str, contract.Route] = field(default_factory=dict)  # alias -> route
    tiers: dict[str, contract.Tier] = field(default_factory=dict)
    catalogs: dict[str, contract.Catalog] = field(default_factory=dict)

    def _previous_route(self, alias: str) -> contract.Route | None:
        if self.previous is None:
            return None
        return next((r for r in self.previous.routes if r.model == alias), None)

    def _route_by_name(self, name: str) -> contract.Route | None:
        if name in self.routes.fresh:
            return self.routes.fresh[name]
        alias = self.routes.broken_aliases.get(name)
        return self._previous_route(alias) if alias else None

    def _route_by_alias(self, alias: str) -> contract.Route | None:
        fresh = next((r for r in self.routes.fresh.values() if r.model == alias), None)
        if fresh is not None:
            return fresh
        broken = alias in self.routes.broken_aliases.values()
        return self._previous_route(alias) if broken else None

    def _catalog(self, name: str) -> contract.Catalog | None:
        """A catalog as specified, else (broken) its last good entry on this gateway."""
        if name in self.routes.catalogs:
            return self.routes.catalogs[name]
        if name not in self.routes.catalog_names or self.previous is None:
            return None
        return next((c for c in self.previous.catalogs if c.name == name), None)

    def _admit(
        self, tier: contract.Tier, routes: list[contract.Route], catalogs: list[contract.Catalog]
    ) -> bool:
        taken = {d for t in self.tiers.values() for d in t.key_sha256}
        if taken & set(tier.key_sha256):
            return False
        served = {c.name for c in catalogs}
        self.tiers[tier.name] = tier.model_copy(
            update={
                "models": tuple(sorted(r.model for r in routes)),
                "catalogs": tuple(c for c in tier.catalogs if c.name in served),
            }
        )
        self.entries.update((route.model, route) for route in routes)
        self.catalogs.update((catalog.name, catalog) for catalog in catalogs)
        return True

    def add_fresh(self, tier: ApiKeyTier, keys: ServedKeys) -> bool:
        allowed = sorted(self.routes.names if tier.spec.models is None else tier.spec.models)
        catalog_names = self.routes.catalog_names
        routes = [self._route_by_name(n) for n in allowed if n not in catalog_names]
        catalogs = [self._catalog(n) for n in allowed if n in catalog_names]
        found = [c for c in catalogs if c is not None]
        entry = contract_tier(
            tier.metadata.name,
            tier.spec,
            keys.digests,
            (),
            keys.expiry,
            [c.name for c in found],
            keys.names,
        )
        return self._admit(entry, [r for r in routes if r is not None], found)

    def carry_over(self, tier_name: str) -> bool:
        last_good = next(
            (t for t in (self.previous.tiers if self.previous else ()) if t.name == tier_name), None
        )
        if last_good is None:
            return False
        routes = [r for r in (self._route_by_alias(a) for a in last_good.models) if r is not None]
        catalogs = [c for c in (self._catalog(g.name) for g in last_good.catalogs) if c is not None]
        return self._admit(last_good, routes, catalogs)

    def seal(self, namespace: str) -> tuple[contract.GatewayConfig, ValidationError | None]:
        """The config, or when the contract refuses it whole, the last good one and why."""
        try:
            sealed = contract.seal(
                gateway=self.name,
                namespace=namespace,
                routes=[self.entries[alias] for alias in sorted(self.entries)],
                tiers=[self.tiers[name] for name in sorted(self.tiers)],
                catalogs=[self.catalogs[name] for name in sorted(self.catalogs)],
            )
            return sealed, None
        except ValidationError as error:
            if self.previous is not None:
                return self.previous, error
            empty = contract.seal(gateway=self.name, namespace=namespace, routes=(), tiers=())
            return empty, error


def _config_refused(gateway: str, error: ValidationError) -> Problem:
    return Problem(
        "ConfigRefused",
        f"the gateway contract refuses the config of gateway {gateway} "
        f"({invalid_spec(error).message}); its last good config keeps serving",
    )


def _owner(tier: ApiKeyTier, controller: bool) -> OwnerRef:
    return OwnerRef(
        api_version=API_KEY_TIER.api_version,
        kind=API_KEY_TIER.kind,
        name=tier.metadata.name,
        uid=tier.metadata.uid,
        controller=controller,
    )


def _credential_secrets(config: contract.GatewayConfig) -> tuple[str, ...]:
    refs = [t.credential for r in config.routes for t in r.targets]
    refs += [t.credential for c in config.catalogs for t in c.targets]
    refs += [tier.upstream.credential for tier in config.tiers]
    return tuple(sorted({ref.secret for ref in refs if ref is not None}))


def _objectives(members: list[ApiKeyTier]) -> tuple[TierObjectives, ...]:
    return tuple(
        TierObjectives(_owner(tier, controller=True), tier.spec.slo)
        for tier in sorted(members, key=lambda t: t.metadata.name)
        if tier.spec.slo is not None
    )


def _plan(
    gateway: str, namespace: str, members: list[ApiKeyTier], config: contract.GatewayConfig
) -> GatewayPlan:
    if gateway == SHARED_GATEWAY:
        return GatewayPlan(
            name=gateway,
            namespace=namespace,
            isolation="Shared",
            config=config,
            owners=tuple(_owner(tier, controller=False) for tier in members),
            credential_secrets=_credential_secrets(config),
            objectives=_objectives(members),
        )
    (tier,) = members
    spec = tier.spec
    return GatewayPlan(
        name=gateway,
        namespace=namespace,
        isolation="Dedicated",
        config=config,
        owners=(_owner(tier, controller=True),),
        replicas=spec.replicas if spec.replicas is not None else (None if spec.autoscaling else 1),
        autoscaling=spec.autoscaling,
        resources=spec.resources,
        pod_disruption_budget=spec.pod_disruption_budget,
        credential_secrets=_credential_secrets(config),
        objectives=_objectives(members),
    )


def _add_tiers(
    builder: _GatewayBuilder,
    members: list[ApiKeyTier],
    unparsed: list[str],
    key_digests: Mapping[str, ServedKeys],
    tier_problems: dict[str, Problem],
) -> set[str]:
    """Add each tier of the gateway as specified when it can be (``key_digests`` has it: a tier
    with InvalidKey is, with its usable keys), else its last good entry; the names added fresh."""
    fresh: set[str] = set()
    for tier in members:
        name = tier.metadata.name
        if name not in key_digests:
            continue
        try:
            if builder.add_fresh(tier, key_digests[name]):
                fresh.add(name)
        except ValidationError as error:
            # A spec the checks passed but the gateway contract refuses: reported for
            # this tier (its last good entry keeps serving), never a failed pass.
            tier_problems[name] = invalid_spec(error)
    for name in [t.metadata.name for t in members] + unparsed:
        if name in tier_problems and name not in fresh:
            builder.carry_over(name)
    return fresh


def translate(
    namespace: str,
    routes: Iterable[Body],
    tiers: Iterable[Body],
    secrets: SecretDigests,
    previous: Mapping[str, contract.GatewayConfig],
    secrets_created: Mapping[str, str] | None = None,
) -> Translation:
    """All ModelRoute and ApiKeyTier bodies of ``namespace`` -> one plan per gateway.

    A Dedicated tier gets ``tiergate-<tier>``; the Shared tiers share ``tiergate-shared``,
    which exists while at least one Shared tier does. Objects being deleted are ignored.
    ``secrets_created``: each Secret's creationTimestamp (a ``keyPolicy`` refusal counts from it).
    """
    route_problems: dict[str, Problem] = {}
    tier_problems: dict[str, Problem] = {}
    route_set = _gather_routes(_live(routes), secrets, route_problems)
    tier_bodies = _live(tiers)
    parsed_tiers, key_digests = check_tiers(
        tier_bodies,
        route_set.names,
        secrets,
        tier_problems,
        secrets_created,
        route_set.catalog_names,
    )

    members: dict[str, list[ApiKeyTier]] = defaultdict(list)
    for tier in parsed_tiers.values():
        members[gateway_for_tier(tier.metadata.name, tier.spec.isolation)].append(tier)
    unparsed = [
        str(b["metadata"]["name"]) for b in tier_bodies if b["metadata"]["name"] not in parsed_tiers
    ]

    plans: list[GatewayPlan] = []
    tier_gateways: dict[str, str] = {}
    for gateway in sorted(members):
        builder = _GatewayBuilder(gateway, route_set, previous.get(gateway))
        fresh = _add_tiers(builder, members[gateway], unparsed, key_digests, tier_problems)
        config, refused = builder.seal(namespace)
        if refused is not None:
            # Entries the contract took one by one but not together (the checks should make
            # this impossible): the last good config keeps serving, and every tier on the
            # gateway says why instead of looking served.
            problem = _config_refused(gateway, refused)
            for name in [t.metadata.name for t in members[gateway]]:
                if name in fresh or name not in tier_problems:
                    tier_problems[name] = problem
        tier_gateways.update((tier.name, gateway) for tier in config.tiers)
        plans.append(_plan(gateway, namespace, members[gateway], config))

    served_models = {p.name: {r.model for r in p.config.routes} for p in plans}
    served_catalogs = {p.name: {c.name for c in p.config.catalogs} for p in plans}
    route_gateways = {
        name: tuple(p.name for p in plans if alias in served_models[p.name])
        for name in route_set.names
        if (alias := route_set.alias(name)) is not None
    }
    route_gateways.update(
        (name, tuple(p.name for p in plans if name in served_catalogs[p.name]))
        for name in route_set.catalog_names
    )
    return Translation(
        plans=tuple(plans),
        route_problems=route_problems,
        tier_problems=tier_problems,
        route_gateways={name: gws for name, gws in route_gateways.items() if gws},
        tier_gateways=tier_gateways,
    )
