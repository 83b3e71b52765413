"""Validate a gateway config and compile it into lookup tables; the whole object is swapped.

``ConfigStore.offer(data)`` parses and validates raw bytes with the contract
models; a config of an unknown version or an invalid one is refused (a log
line and ``tiergate_gateway_config_rejected_total``) and the current one
keeps serving. Accepted configs replace ``store.current`` in one assignment,
so a request sees either the old or the new config, never a mix.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import pydantic

from tiergate_contract import (
    CONFIG_VERSION,
    Budget,
    Catalog,
    CircuitBreaker,
    CredentialRef,
    Credits,
    GatewayConfig,
    Hedge,
    Limits,
    Pricing,
    RequestClass,
    Route,
    RoutingStrategy,
    Target,
    Tier,
    TierCatalog,
)
from tiergate_contract.ledger import KEY_NAME_OTHER

from .budget import to_nano
from .client import Endpoint
from .routing import priority_groups

__all__ = [
    "CompiledConfig",
    "CompiledRoute",
    "ConfigRejected",
    "ConfigStore",
    "compile_config",
    "parse_config",
]

_log = logging.getLogger("tiergate_gateway.config")


class ConfigRejected(ValueError):
    """A config the gateway will not serve; the message says why."""


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    route: Route
    # Candidates per request class; Premium falls back to Standard when a route has no Premium target.
    candidates: dict[RequestClass, tuple[Target, ...]]
    # The same by priority (lowest first, drained targets left out): what ``plan`` orders.
    groups: dict[RequestClass, tuple[tuple[Target, ...], ...]]
    endpoints: dict[str, Endpoint]
    # Prices as integer nano-USD per million tokens: per target (input, output), and the worst
    # case among a class's candidates (for budget reservations).
    nano_prices: dict[str, tuple[int, int]]
    max_nano_prices: dict[RequestClass, tuple[int, int]]
    # Input + output price per target: what CostFirst orders by.
    blended_prices: dict[str, int]
    # A catalog's model: the catalog's name and the model name sent upstream (whatever the
    # target); ``route`` is then the catalog's, shared by all its models, breakers included.
    catalog: str | None = None
    upstream_model: str | None = None
    # The route's settings read on every call, copied out of the pydantic models once: on
    # Python 3.11 an attribute of a pydantic model (whose class has ``__getattr__``) costs
    # about 300 instructions more to read than a slot.
    model: str = field(init=False)
    targets: tuple[Target, ...] = field(init=False)
    circuit_breaker: CircuitBreaker = field(init=False)
    max_attempts: int = field(init=False)
    failover_statuses: tuple[int, ...] = field(init=False)
    on_timeout: bool = field(init=False)
    connect_seconds: float = field(init=False)
    first_byte_seconds: float = field(init=False)
    first_token_seconds: float | None = field(init=False)
    total_seconds: float = field(init=False)
    request_seconds: float | None = field(init=False)

    def __post_init__(self) -> None:
        route, failover, timeouts = self.route, self.route.failover, self.route.timeouts
        copied = {
            "model": route.model,
            "targets": route.targets,
            "circuit_breaker": failover.circuit_breaker,
            "max_attempts": failover.max_attempts,
            "failover_statuses": failover.statuses,
            "on_timeout": failover.on_timeout,
            "connect_seconds": timeouts.connect_seconds,
            "first_byte_seconds": timeouts.first_byte_seconds,
            "first_token_seconds": timeouts.first_token_seconds,
            "total_seconds": timeouts.total_seconds,
            "request_seconds": timeouts.request_seconds,
        }
        for name, value in copied.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True, slots=True)
class TierSettings:
    """A tier's settings the forwarder reads on every call, copied out of its pydantic model
    once per config (see ``CompiledRoute``)."""

    strategy: RoutingStrategy
    hedge: Hedge | None
    credential: CredentialRef | None  # the tier's own upstream credential
    model_prefix: str
    # Read by the admission, the call's reader and the access log.
    name: str
    limits: Limits
    budget: Budget | None
    credits: Credits | None
    default_class: RequestClass
    per_key_metrics: bool
    attempts: int  # attempts that may be in flight at once: 1, or 1 + a hedge's extras
    tokens_per_minute: int | None

    @classmethod
    def of(cls, tier: Tier) -> TierSettings:
        routing, upstream, limits = tier.routing, tier.upstream, tier.limits
        hedge = routing.hedge
        return cls(
            routing.strategy,
            hedge,
            upstream.credential,
            upstream.model_prefix,
            tier.name,
            limits,
            tier.budget,
            tier.credits,
            tier.default_class,
            tier.per_key_metrics,
            1 if hedge is None else 1 + hedge.max_extra,
            limits.tokens_per_minute,
        )


# A key's digest, its tier, its name, the tier's settings, when it expires (POSIX seconds).
KeyEntry = tuple[str, Tier, str, TierSettings, float | None]


@dataclass(frozen=True, slots=True)
class _Pattern:
    prefix: str
    route: CompiledRoute  # its prices; ``upstream_model`` is the model asked for


@dataclass(frozen=True, slots=True)
class CompiledConfig:
    config: GatewayConfig
    # Digest -> (digest, its tier, its name: ``<secret>/<data key>``, or KEY_NAME_OTHER, the
    # tier's settings, the POSIX time from which the key is refused or None).
    tiers_by_digest: dict[str, KeyEntry]
    # Route aliases and catalog models by exact name.
    routes: dict[str, CompiledRoute]
    allowed: dict[str, frozenset[str]]
    models_body: dict[str, bytes]
    # Digest -> POSIX time from which the key is refused (``auth`` reads the copy in the key's
    # entry of ``tiers_by_digest`` and compares it with its clock).
    key_expiry: dict[str, float] = field(default_factory=dict)
    # Catalog patterns, longest prefix first; and per tier, the catalogs it may use.
    patterns: tuple[_Pattern, ...] = ()
    catalog_grants: dict[str, dict[str, TierCatalog]] = field(default_factory=dict)
    tier_settings: dict[str, TierSettings] = field(default_factory=dict)

    @property
    def generation(self) -> str:
        return self.config.generation

    def lookup(self, model: str) -> CompiledRoute | None:
        """The route serving ``model``: an exact name first, then the longest catalog pattern."""
        route = self.routes.get(model)
        if route is not None or not self.patterns:
            return route
        for pattern in self.patterns:
            if model.startswith(pattern.prefix):
                return dataclasses.replace(pattern.route, upstream_model=model)
        return None

    def may_use(self, tier: str, model: str, route: CompiledRoute) -> bool:
        if route.catalog is None:
            return model in self.allowed[tier]
        grant = self.catalog_grants[tier].get(route.catalog)
        return grant is not None and grant.allows(model)

    def breaker_keys(self) -> set[tuple[str, str]]:
        """(route, target) of every circuit breaker this config uses."""
        keys = {(r.model, t.name) for r in self.config.routes for t in r.targets}
        keys.update((c.name, t.name) for c in self.config.catalogs for t in c.targets)
        return keys


_MAX_CONFIG_BYTES = 64 * 1024 * 1024


def _gunzip(data: bytes) -> bytes:
    """Unpack a gzip config, refusing anything that inflates past ``_MAX_CONFIG_BYTES``."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, _MAX_CONFIG_BYTES + 1)
    except zlib.error as exc:
        raise ConfigRejected(f"config is not valid gzip: {exc}") from exc
    if len(out) > _MAX_CONFIG_BYTES or inflater.unconsumed_tail:
        raise ConfigRejected(f"config inflates to more than {_MAX_CONFIG_BYTES} bytes")
    return out


def parse_config(data: bytes | str) -> GatewayConfig:
    """Bytes of a config (JSON, or gzip of it) -> a validated ``GatewayConfig``, or ``ConfigRejected``."""
    if isinstance(data, bytes) and data[:2] == b"\x1f\x8b":
        data = _gunzip(data)
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigRejected(f"config is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigRejected("config is not a JSON object")
    version = raw.get("version")
    if version != CONFIG_VERSION:
        raise ConfigRejected(
            f"unknown config version {version!r}; this gateway serves {CONFIG_VERSION!r}"
        )
    try:
        return GatewayConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise ConfigRejected(f"config is invalid: {problems}") from exc


def _compile_route(route: Route) -> CompiledRoute:
    endpoints: dict[str, Endpoint] = {}
    for target in route.targets:
        try:
            endpoints[target.name] = Endpoint.parse(target.base_url)
        except ValueError as exc:
            raise ConfigRejected(f"route {route.model!r} target {target.name!r}: {exc}") from exc
    standard = tuple(t for t in route.targets if t.request_class is RequestClass.STANDARD)
    premium = tuple(t for t in route.targets if t.request_class is RequestClass.PREMIUM) or standard
    candidates = {RequestClass.STANDARD: standard, RequestClass.PREMIUM: premium}
    nano = {
        t.name: (to_nano(t.pricing.input_per_million), to_nano(t.pricing.output_per_million))
        for t in route.targets
    }
    return CompiledRoute(
        route=route,
        candidates=candidates,
        groups={c: priority_groups(ts) for c, ts in candidates.items()},
        endpoints=endpoints,
        nano_prices=nano,
        max_nano_prices={
            c: (max(nano[t.name][0] for t in ts), max(nano[t.name][1] for t in ts))
            for c, ts in candidates.items()
        },
        blended_prices={name: prices[0] + prices[1] for name, prices in nano.items()},
    )


def _priced(base: CompiledRoute, pricing: Pricing, upstream_model: str | None) -> CompiledRoute:
    price = (to_nano(pricing.input_per_million), to_nano(pricing.output_per_million))
    return dataclasses.replace(
        base,
        nano_prices=dict.fromkeys(base.nano_prices, price),
        max_nano_prices=dict.fromkeys(base.max_nano_prices, price),
        blended_prices=dict.fromkeys(base.blended_prices, price[0] + price[1]),
        upstream_model=upstream_model,
    )


def _compile_catalog(catalog: Catalog) -> tuple[dict[str, CompiledRoute], list[_Pattern]]:
    """Each model and pattern of a catalog as a route sharing the catalog's targets."""
    # The catalog's targets as route targets; ``upstream_model`` stays empty (never sent: the
    # model's own name is) and prices are per model.
    targets = tuple(
        Target.model_construct(**dict(t), upstream_model="", pricing=Pricing())
        for t in catalog.targets
    )
    route = Route.model_construct(
        model=catalog.name, targets=targets, failover=catalog.failover, timeouts=catalog.timeouts
    )
    base = dataclasses.replace(_compile_route(route), catalog=catalog.name)
    models = {
        m.model: _priced(base, catalog.price_of(m), m.upstream_model or m.model)
        for m in catalog.models
    }
    patterns = [
        _Pattern(p.prefix, _priced(base, catalog.price_of(p), None)) for p in catalog.patterns
    ]
    return models, patterns


def _models_body(tier: Tier, config: GatewayConfig) -> bytes:
    """``/v1/models`` for a tier: its route aliases and the catalog models it may use (a
    pattern's models cannot be listed: only the names a catalog lists are)."""
    names = set(tier.models)
    catalogs = {c.name: c for c in config.catalogs}
    for grant in tier.catalogs:
        names.update(m.model for m in catalogs[grant.name].models if grant.allows(m.model))
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "tiergate"}
                for m in sorted(names)
            ],
        }
    )


def compile_config(config: GatewayConfig) -> CompiledConfig:
    routes = {route.model: _compile_route(route) for route in config.routes}
    patterns: list[_Pattern] = []
    for catalog in config.catalogs:
        models, found = _compile_catalog(catalog)
        routes.update(models)
        patterns += found
    patterns.sort(key=lambda p: len(p.prefix), reverse=True)
    key_expiry = {
        entry.sha256: entry.expires_at.timestamp()
        for tier in config.tiers
        for entry in tier.key_expiry
    }
    tier_settings = {tier.name: TierSettings.of(tier) for tier in config.tiers}
    tiers_by_digest: dict[str, KeyEntry] = {}
    for tier in config.tiers:
        names = {entry.sha256: entry.name for entry in tier.key_names}
        settings = tier_settings[tier.name]
        for digest in tier.key_sha256:
            name = names.get(digest, KEY_NAME_OTHER)
            tiers_by_digest[digest] = (digest, tier, name, settings, key_expiry.get(digest))
    allowed = {tier.name: frozenset(tier.models) for tier in config.tiers}
    # Tiers allowing the same models share one body (90 tiers of a 2,000-model catalog).
    bodies: dict[tuple[object, ...], bytes] = {}
    models_body: dict[str, bytes] = {}
    for tier in config.tiers:
        allowlist = (tier.models, tier.catalogs)
        if allowlist not in bodies:
            bodies[allowlist] = _models_body(tier, config)
        models_body[tier.name] = bodies[allowlist]
    grants = {tier.name: {c.name: c for c in tier.catalogs} for tier in config.tiers}
    return CompiledConfig(
        config,
        tiers_by_digest,
        routes,
        allowed,
        models_body,
        key_expiry=key_expiry,
        patterns=tuple(patterns),
        catalog_grants=grants,
        tier_settings=tier_settings,
    )


class ConfigStore:
    """Holds the serving config; ``offer`` validates and swaps, listeners hear about swaps."""

    def __init__(
        self, on_rejected: Callable[[str], None], on_loaded: Callable[[CompiledConfig], None]
    ) -> None:
        self.current: CompiledConfig | None = None
        self._on_rejected = on_rejected
        self._on_loaded = on_loaded

    def offer(self, data: bytes | str, source: str) -> bool:
        """Validate and swap in a config; ``False`` (and the old config keeps serving) if refused."""
        try:
            compiled = compile_config(parse_config(data))
        except ConfigRejected as exc:
            _log.error(
                "config from %s refused, keeping generation %s: %s",
                source,
                self.current.generation if self.current else "<none>",
                exc,
            )
            self._on_rejected(str(exc))
            return False
        return self.install(compiled, source)

    def install(self, compiled: CompiledConfig, source: str) -> bool:
        if self.current is not None and self.current.generation == compiled.generation:
            return True
        self.current = compiled
        _log.info(
            "config generation %s from %s is serving (%d routes, %d tiers)",
            compiled.generation,
            source,
            len(compiled.routes),
            len(compiled.config.tiers),
        )
        self._on_loaded(compiled)
        return True
