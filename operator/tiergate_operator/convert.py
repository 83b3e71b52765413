"""Valid ModelRoute / ApiKeyTier specs -> entries of the gateway config contract."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import tiergate_contract as contract
from tiergate_operator.models import (
    ApiKeyTierSpec,
    Catalog,
    Credits,
    Failover,
    ModelRouteSpec,
    Pricing,
    Routing,
    SecretKeyRef,
    Timeouts,
)

__all__ = ["contract_catalog", "contract_route", "contract_tier"]


def _credential(ref: SecretKeyRef | None) -> contract.CredentialRef | None:
    return contract.CredentialRef(secret=ref.name, key=ref.key) if ref else None


def _set_fields(**values: Any) -> dict[str, Any]:
    """Only the fields the user set, so the contract's defaults apply to the rest."""
    return {name: value for name, value in values.items() if value is not None}


def _pricing(pricing: Pricing | None) -> contract.Pricing | None:
    if pricing is None:
        return None
    return contract.Pricing(
        input_per_million=Decimal(pricing.input_per_million),
        output_per_million=Decimal(pricing.output_per_million),
    )


def contract_route(spec: ModelRouteSpec) -> contract.Route:
    assert spec.model is not None, "a catalog route converts with contract_catalog"
    targets = tuple(
        contract.Target(
            name=target.name,
            base_url=target.base_url,
            upstream_model=target.upstream_model,
            weight=target.weight,
            priority=target.priority,
            request_class=contract.RequestClass(target.request_class),
            pricing=_pricing(target.pricing) or contract.Pricing(),
            credential=_credential(target.credentials_secret_ref),
        )
        for target in sorted(spec.targets, key=lambda t: t.name)
    )
    return contract.Route(
        model=spec.model,
        targets=targets,
        failover=_failover(spec.failover),
        timeouts=_timeouts(spec.timeouts),
    )


def contract_catalog(name: str, spec: ModelRouteSpec) -> contract.Catalog:
    """A catalog route: its models and patterns sorted, each price as the user wrote it
    (``None``: the default), so the config grows once per model."""
    catalog: Catalog | None = spec.catalog
    assert catalog is not None, "a route with a model converts with contract_route"
    return contract.Catalog(
        name=name,
        models=tuple(
            contract.CatalogModel(
                model=m.model, upstream_model=m.upstream_model, pricing=_pricing(m.pricing)
            )
            for m in sorted(catalog.models or (), key=lambda m: m.model)
        ),
        patterns=tuple(
            contract.CatalogPattern(prefix=p.pattern[:-1], pricing=_pricing(p.pricing))
            for p in sorted(catalog.patterns or (), key=lambda p: p.pattern)
        ),
        default_pricing=_pricing(catalog.default_pricing) or contract.Pricing(),
        targets=tuple(
            contract.CatalogTarget(
                name=target.name,
                base_url=target.base_url,
                weight=target.weight,
                priority=target.priority,
                request_class=contract.RequestClass(target.request_class),
                credential=_credential(target.credentials_secret_ref),
            )
            for target in sorted(spec.targets, key=lambda t: t.name)
        ),
        failover=_failover(spec.failover),
        timeouts=_timeouts(spec.timeouts),
    )


def _failover(failover: Failover | None) -> contract.Failover:
    return (
        contract.Failover(
            **_set_fields(
                statuses=tuple(failover.statuses) if failover.statuses is not None else None,
                on_timeout=failover.on_timeout,
                max_attempts=failover.max_attempts,
                circuit_breaker=contract.CircuitBreaker(
                    **_set_fields(
                        consecutive_failures=failover.circuit_breaker.consecutive_failures,
                        cooldown_seconds=failover.circuit_breaker.cooldown_seconds,
                    )
                )
                if failover.circuit_breaker
                else None,
            )
        )
        if failover
        else contract.Failover()
    )


def _timeouts(timeouts: Timeouts | None) -> contract.Timeouts:
    return (
        contract.Timeouts(
            **_set_fields(
                connect_seconds=timeouts.connect_seconds,
                first_byte_seconds=timeouts.first_byte_seconds,
                first_token_seconds=timeouts.first_token_seconds,
                total_seconds=timeouts.total_seconds,
                request_seconds=timeouts.request_seconds,
            )
        )
        if timeouts
        else contract.Timeouts()
    )


def tier_catalogs(
    spec: ApiKeyTierSpec, catalogs: Iterable[str]
) -> tuple[contract.TierCatalog, ...]:
    """The catalogs a tier may use, each narrowed as its ``spec.catalogs`` entry says."""
    narrowed = {c.route: tuple(sorted(c.models)) for c in spec.catalogs or ()}
    return tuple(
        contract.TierCatalog(name=name, only=narrowed.get(name, ())) for name in sorted(catalogs)
    )


def contract_tier(
    name: str,
    spec: ApiKeyTierSpec,
    key_digests: Iterable[str],
    models: Iterable[str],
    key_expiry: Iterable[contract.KeyExpiry] = (),
    catalogs: Iterable[str] = (),
    key_names: Iterable[contract.KeyName] = (),
) -> contract.Tier:
    limits, budget, upstream = spec.limits, spec.budget, spec.upstream
    return contract.Tier(
        name=name,
        key_sha256=tuple(sorted(set(key_digests))),
        key_expiry=tuple(sorted(key_expiry, key=lambda entry: entry.sha256)),
        key_names=tuple(sorted(key_names, key=lambda entry: entry.sha256)),
        credits=_credits(spec.credits),
        per_key_metrics=bool(spec.per_key_metrics),
        models=tuple(sorted(set(models))),
        catalogs=tier_catalogs(spec, catalogs),
        default_class=contract.RequestClass(spec.default_class or "Standard"),
        limits=contract.Limits(
            requests_per_minute=limits.requests_per_minute,
            tokens_per_minute=limits.tokens_per_minute,
            concurrent_requests=limits.concurrent_requests,
        )
        if limits
        else contract.Limits(),
        budget=contract.Budget(
            soft_usd=Decimal(budget.monthly_usd) * budget.soft_threshold_percent / 100,
            hard_usd=Decimal(budget.monthly_usd) * budget.hard_threshold_percent / 100,
        )
        if budget
        else None,
        upstream=contract.TierUpstream(
            credential=_credential(upstream.credentials_secret_ref),
            model_prefix=upstream.model_prefix or "",
        )
        if upstream
        else contract.TierUpstream(),
        routing=_routing(spec.routing),
    )


def _credits(credits: Credits | None) -> contract.Credits | None:
    """The sum of the grants (a tier with ``credits`` and no grant has none to spend)."""
    if credits is None:
        return None
    return contract.Credits(
        granted_usd=sum((Decimal(grant.amount_usd) for grant in credits.grants or ()), Decimal(0)),
        warn_below_usd=Decimal(credits.warn_below_usd or 0),
    )


def _routing(routing: Routing | None) -> contract.TierRouting:
    if routing is None:
        return contract.TierRouting()
    hedge = routing.hedge
    return contract.TierRouting(
        strategy=contract.RoutingStrategy(routing.strategy or "Weighted"),
        hedge=contract.Hedge(after_ms=hedge.after_milliseconds, max_extra=hedge.max_extra_attempts)
        if hedge
        else None,
    )
