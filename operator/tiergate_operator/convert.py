"""Valid ModelRoute / ApiKeyTier specs -> entries of the gateway config contract."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import tiergate_contract as contract
from tiergate_operator.models import ApiKeyTierSpec, ModelRouteSpec, Routing, SecretKeyRef

__all__ = ["contract_route", "contract_tier"]


def _credential(ref: SecretKeyRef | None) -> contract.CredentialRef | None:
    return contract.CredentialRef(secret=ref.name, key=ref.key) if ref else None


def _set_fields(**values: Any) -> dict[str, Any]:
    """Only the fields the user set, so the contract's defaults apply to the rest."""
    return {name: value for name, value in values.items() if value is not None}


def contract_route(spec: ModelRouteSpec) -> contract.Route:
    targets = tuple(
        contract.Target(
            name=target.name,
            base_url=target.base_url,
            upstream_model=target.upstream_model,
            weight=target.weight,
            priority=target.priority,
            request_class=contract.RequestClass(target.request_class),
            pricing=contract.Pricing(
                input_per_million=Decimal(target.pricing.input_per_million),
                output_per_million=Decimal(target.pricing.output_per_million),
            )
            if target.pricing
            else contract.Pricing(),
            credential=_credential(target.credentials_secret_ref),
        )
        for target in sorted(spec.targets, key=lambda t: t.name)
    )
    failover, timeouts = spec.failover, spec.timeouts
    return contract.Route(
        model=spec.model,
        targets=targets,
        failover=contract.Failover(
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
        else contract.Failover(),
        timeouts=contract.Timeouts(
            **_set_fields(
                connect_seconds=timeouts.connect_seconds,
                first_byte_seconds=timeouts.first_byte_seconds,
                first_token_seconds=timeouts.first_token_seconds,
                total_seconds=timeouts.total_seconds,
                request_seconds=timeouts.request_seconds,
            )
        )
        if timeouts
        else contract.Timeouts(),
    )


def contract_tier(
    name: str,
    spec: ApiKeyTierSpec,
    key_digests: Iterable[str],
    models: Iterable[str],
    key_expiry: Iterable[contract.KeyExpiry] = (),
) -> contract.Tier:
    limits, budget, upstream = spec.limits, spec.budget, spec.upstream
    return contract.Tier(
        name=name,
        key_sha256=tuple(sorted(set(key_digests))),
        key_expiry=tuple(sorted(key_expiry, key=lambda entry: entry.sha256)),
        models=tuple(sorted(set(models))),
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
