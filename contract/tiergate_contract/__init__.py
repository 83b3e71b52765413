"""The versioned gateway configuration: the contract between operator and gateway.

The operator renders one ``GatewayConfig`` per gateway into a ConfigMap; the
gateway validates it with these models before swapping it in. Nothing here
depends on Kubernetes. No secret is ever part of a config: client keys appear
only as SHA-256 digests, upstream credentials only as references to files
(``<credentials_dir>/<secret>/<key>``, as a mounted Secret volume lays them out).

Money is ``Decimal`` and serialises as a string, so configs round-trip exactly.
A config whose ``version`` is not ``CONFIG_VERSION`` is refused.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

__all__ = [
    "CONFIG_GZIP_KEY",
    "CONFIG_KEY",
    "CONFIG_VERSION",
    "MAX_KEYS_PER_TIER",
    "Budget",
    "Catalog",
    "CatalogModel",
    "CatalogPattern",
    "CatalogTarget",
    "CircuitBreaker",
    "CredentialRef",
    "Credits",
    "Failover",
    "GatewayConfig",
    "Hedge",
    "KeyExpiry",
    "KeyName",
    "Limits",
    "Money",
    "Pricing",
    "RequestClass",
    "Route",
    "RoutingStrategy",
    "Target",
    "Tier",
    "TierCatalog",
    "TierRouting",
    "TierUpstream",
    "Timeouts",
    "canonical_json",
    "client_key_problem",
    "config_from_configmap",
    "configmap_payload",
    "hash_client_key",
    "seal",
]

CONFIG_VERSION = "tiergate.dev/gateway-config/v1"
# The ConfigMap data key holding the JSON config.
CONFIG_KEY = "config.json"
# The ConfigMap binaryData key holding it gzip-compressed, for configs too large to inline
# (a ConfigMap holds at most 1 MiB; 1,000 routes for 90 tiers is more than that as JSON).
CONFIG_GZIP_KEY = "config.json.gz"
INLINE_LIMIT_BYTES = 256 * 1024

Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=18, decimal_places=9),
    PlainSerializer(lambda value: format(value, "f"), return_type=str),
]


def hash_client_key(key: str) -> str:
    """Digest under which a client key appears in a config (hex SHA-256)."""
    return hashlib.sha256(key.encode()).hexdigest()


def client_key_problem(value: str) -> str | None:
    """Why a Secret value cannot be a client key, or None when it can.

    A client sends its key in an ``Authorization: Bearer`` header, which cannot carry
    whitespace or anything but visible ASCII (RFC 6750's token); such a value (a trailing
    newline from ``kubectl create secret --from-file`` included) could never authenticate,
    so it is refused instead of hashed. The message describes the value without echoing it.
    """
    if not value:
        return "is empty"
    if not value.strip():
        return "is only whitespace"
    if value[-1] in "\r\n":
        return "ends with a newline"
    if value != value.strip():
        return "starts or ends with whitespace"
    if not all(33 <= ord(char) <= 126 for char in value):
        return (
            "holds a character other than visible ASCII (a space, a control or non-ASCII character)"
        )
    return None


def canonical_json(config: GatewayConfig) -> bytes:
    """Deterministic bytes of a config: UTF-8 JSON with sorted keys and no whitespace."""
    return orjson.dumps(config.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


def configmap_payload(config: GatewayConfig) -> dict[str, dict[str, str]]:
    """The ConfigMap fields carrying ``config``: ``data`` when small, else gzip ``binaryData``."""
    raw = canonical_json(config)
    if len(raw) <= INLINE_LIMIT_BYTES:
        return {"data": {CONFIG_KEY: raw.decode()}}
    packed = gzip.compress(raw, compresslevel=9, mtime=0)  # mtime=0: same input, same bytes
    return {"binaryData": {CONFIG_GZIP_KEY: base64.b64encode(packed).decode()}}


def config_from_configmap(configmap: Mapping[str, Any]) -> bytes | None:
    """The config bytes a ConfigMap carries (see ``configmap_payload``), or None."""
    packed = (configmap.get("binaryData") or {}).get(CONFIG_GZIP_KEY)
    if packed is not None:
        try:
            return gzip.decompress(base64.b64decode(packed))
        except (ValueError, OSError, EOFError):
            return b""  # corrupt: the caller's validation refuses it
    inline = (configmap.get("data") or {}).get(CONFIG_KEY)
    return None if inline is None else str(inline).encode()


def seal(
    *,
    gateway: str,
    namespace: str,
    routes: Sequence[Route],
    tiers: Sequence[Tier],
    catalogs: Sequence[Catalog] = (),
) -> GatewayConfig:
    """Build a config whose ``generation`` is the hash of its content."""
    unsealed = GatewayConfig(
        generation="-",
        gateway=gateway,
        namespace=namespace,
        routes=tuple(routes),
        tiers=tuple(tiers),
        catalogs=tuple(catalogs),
    )
    digest = hashlib.sha256(canonical_json(unsealed)).hexdigest()[:16]
    return unsealed.model_copy(update={"generation": digest})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RequestClass(StrEnum):
    STANDARD = "Standard"
    PREMIUM = "Premium"


class CredentialRef(_Frozen):
    """A key of a Secret, mounted as a file at ``<credentials_dir>/<secret>/<key>``."""

    secret: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253)


class Pricing(_Frozen):
    """USD per million tokens."""

    input_per_million: Money = Decimal(0)
    output_per_million: Money = Decimal(0)


class Target(_Frozen):
    name: str = Field(min_length=1, max_length=63)
    base_url: str = Field(min_length=1, max_length=2048)
    upstream_model: str = Field(min_length=1, max_length=253)
    weight: int = Field(ge=0, le=1000)
    priority: int = Field(ge=0, le=100)
    request_class: RequestClass = RequestClass.STANDARD
    pricing: Pricing = Pricing()
    credential: CredentialRef | None = None


class CircuitBreaker(_Frozen):
    consecutive_failures: int = Field(default=5, ge=1, le=1000)
    cooldown_seconds: float = Field(default=30.0, gt=0, le=3600)


class Failover(_Frozen):
    statuses: tuple[int, ...] = (429, 500, 502, 503, 504)
    on_timeout: bool = True
    max_attempts: int = Field(default=3, ge=1, le=10)
    circuit_breaker: CircuitBreaker = CircuitBreaker()

    @field_validator("statuses")
    @classmethod
    def _only_retryable(cls, statuses: tuple[int, ...]) -> tuple[int, ...]:
        for status in statuses:
            if status != 429 and not 500 <= status <= 599:
                raise ValueError(f"failover status {status} is not 429 or 5xx")
        return tuple(sorted(set(statuses)))


class Timeouts(_Frozen):
    """Per attempt (counted from the attempt's start), except ``request_seconds``."""

    connect_seconds: float = Field(default=5.0, gt=0, le=600)
    first_byte_seconds: float = Field(default=60.0, gt=0, le=3600)
    # To the first SSE data event of a stream, or the whole body of a plain answer; None: no
    # limit of its own (the first byte's and the attempt's apply). Left out of the JSON when
    # None, like request_seconds: configs not using them read the same to older gateways.
    first_token_seconds: float | None = Field(
        default=None, gt=0, le=3600, exclude_if=lambda seconds: seconds is None
    )
    total_seconds: float = Field(default=600.0, gt=0, le=7200)
    # The whole call, failovers included; None: no limit beyond the attempts' own.
    request_seconds: float | None = Field(
        default=None, gt=0, le=7200, exclude_if=lambda seconds: seconds is None
    )


def _servable_targets(what: str, targets: Sequence[Target | CatalogTarget]) -> None:
    names = [target.name for target in targets]
    if len(names) != len(set(names)):
        raise ValueError(f"{what}: target names are not unique")
    standard = [t for t in targets if t.request_class is RequestClass.STANDARD]
    lowest = min((t.priority for t in standard), default=None)
    if not any(t.weight > 0 for t in standard if t.priority == lowest):
        raise ValueError(f"{what}: no Standard target of the lowest priority has weight > 0")


class Route(_Frozen):
    model: str = Field(min_length=1, max_length=253)
    targets: tuple[Target, ...] = Field(min_length=1, max_length=32)
    failover: Failover = Failover()
    timeouts: Timeouts = Timeouts()

    @model_validator(mode="after")
    def _servable(self) -> Route:
        _servable_targets(f"route {self.model!r}", self.targets)
        return self


# Models one catalog may list; a config holding 2,000 of them stays far below a ConfigMap's limit.
MAX_CATALOG_MODELS = 2048
MAX_CATALOG_PATTERNS = 64


def _empty(value: object) -> bool:
    return not value


class CatalogTarget(_Frozen):
    """A target of a catalog: a ``Target`` without a model or a price (each catalog model has
    its own, the same on every target)."""

    name: str = Field(min_length=1, max_length=63)
    base_url: str = Field(min_length=1, max_length=2048)
    weight: int = Field(ge=0, le=1000)
    priority: int = Field(ge=0, le=100)
    request_class: RequestClass = RequestClass.STANDARD
    credential: CredentialRef | None = None


class CatalogModel(_Frozen):
    """One model of a catalog: the name clients send, the upstream's name for it when that
    differs, and its price (``None``: the catalog's ``default_pricing``)."""

    model: str = Field(min_length=1, max_length=253)
    upstream_model: str | None = Field(
        default=None, min_length=1, max_length=253, exclude_if=_empty
    )
    pricing: Pricing | None = Field(default=None, exclude_if=_empty)


class CatalogPattern(_Frozen):
    """Every model whose name starts with ``prefix`` passes through to the catalog's targets
    under its own name (the CRD's ``deepseek-ai/*`` is the prefix ``deepseek-ai/``)."""

    prefix: str = Field(max_length=253)
    pricing: Pricing | None = Field(default=None, exclude_if=_empty)


class Catalog(_Frozen):
    """Many models behind one set of targets, failover, timeouts and circuit breakers.

    A request's model is looked up among the gateway's routes and catalog models by exact
    name first, then among the catalogs' patterns (the longest prefix wins). ``name`` (the
    ModelRoute's) is the route label of metrics and the key of the catalog's breakers.
    """

    name: str = Field(min_length=1, max_length=253)
    models: tuple[CatalogModel, ...] = Field(default=(), max_length=MAX_CATALOG_MODELS)
    patterns: tuple[CatalogPattern, ...] = Field(default=(), max_length=MAX_CATALOG_PATTERNS)
    default_pricing: Pricing = Pricing()
    targets: tuple[CatalogTarget, ...] = Field(min_length=1, max_length=32)
    failover: Failover = Failover()
    timeouts: Timeouts = Timeouts()

    @model_validator(mode="after")
    def _servable(self) -> Catalog:
        _servable_targets(f"catalog {self.name!r}", self.targets)
        if not self.models and not self.patterns:
            raise ValueError(f"catalog {self.name!r} has neither models nor patterns")
        names = [m.model for m in self.models]
        if len(names) != len(set(names)):
            raise ValueError(f"catalog {self.name!r}: model names are not unique")
        prefixes = [p.prefix for p in self.patterns]
        if len(prefixes) != len(set(prefixes)):
            raise ValueError(f"catalog {self.name!r}: patterns are not unique")
        return self

    def price_of(self, entry: CatalogModel | CatalogPattern) -> Pricing:
        return entry.pricing if entry.pricing is not None else self.default_pricing


class Limits(_Frozen):
    """Per-tier limits; ``None`` means unlimited."""

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    concurrent_requests: int | None = Field(default=None, ge=1)


class Budget(_Frozen):
    """Monthly (calendar month, UTC) spend thresholds in USD."""

    soft_usd: Money
    hard_usd: Money

    @model_validator(mode="after")
    def _ordered(self) -> Budget:
        if self.soft_usd > self.hard_usd:
            raise ValueError("budget soft threshold is above the hard threshold")
        return self


class TierUpstream(_Frozen):
    """A tier's own upstream channel: it overrides every target's credential."""

    credential: CredentialRef | None = None
    model_prefix: str = Field(default="", max_length=253)


class RoutingStrategy(StrEnum):
    """How a tier's calls pick among the targets of one priority."""

    WEIGHTED = "Weighted"  # at random, in proportion to the targets' weights
    COST_FIRST = "CostFirst"  # the cheapest healthy target; weights break ties
    LATENCY_FIRST = "LatencyFirst"  # the lowest peak-EWMA time to first token, load-penalised


class Hedge(_Frozen):
    """With no first token ``after_ms`` into a call, also send it to the next target."""

    after_ms: int = Field(ge=10, le=60_000)
    max_extra: int = Field(default=1, ge=1, le=3)


class TierRouting(_Frozen):
    strategy: RoutingStrategy = RoutingStrategy.WEIGHTED
    hedge: Hedge | None = None


_LOWER_HEX = re.compile(r"[0-9a-f]*")
# Client keys one tier may hold: beyond this a config no longer fits a ConfigMap comfortably.
MAX_KEYS_PER_TIER = 10_000


class KeyExpiry(_Frozen):
    """The moment a client key (by digest) stops being accepted: the gateway's clock decides,
    so no config is written at that moment. A key without one never expires."""

    sha256: str = Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")
    expires_at: AwareDatetime

    @field_validator("expires_at")
    @classmethod
    def _in_utc(cls, moment: datetime) -> datetime:
        return moment.astimezone(UTC)  # one spelling per moment: configs stay byte-identical


class KeyName(_Frozen):
    """Where a client key (by digest) comes from: ``<secret>/<data key>``, never its value.
    Spend and last use are reported per key under this name."""

    sha256: str = Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")
    name: str = Field(min_length=3, max_length=507)


class Credits(_Frozen):
    """Prepaid credits: the sum of a tier's grants, spent by its lifetime spend; they never
    expire. Below ``warn_below_usd`` left, answers carry a warning."""

    granted_usd: Money
    warn_below_usd: Money = Field(default=Decimal(0), exclude_if=lambda amount: amount == 0)


class TierCatalog(_Frozen):
    """A catalog a tier may use: all of it, or only the models ``only`` names (exact names, or
    prefixes ending in ``*``)."""

    name: str = Field(min_length=1, max_length=253)
    only: tuple[str, ...] = Field(default=(), max_length=64, exclude_if=_empty)

    def allows(self, model: str) -> bool:
        if not self.only:
            return True
        return any(
            model.startswith(rule[:-1]) if rule.endswith("*") else model == rule
            for rule in self.only
        )


class Tier(_Frozen):
    name: str = Field(min_length=1, max_length=253)
    key_sha256: tuple[str, ...] = Field(max_length=MAX_KEYS_PER_TIER)
    # Keys of ``key_sha256`` that expire, sorted by digest. Left out of the JSON when empty, so
    # configs without expiring keys are what they were before the field existed.
    key_expiry: tuple[KeyExpiry, ...] = Field(
        default=(), max_length=MAX_KEYS_PER_TIER, exclude_if=lambda expiry: not expiry
    )
    models: tuple[str, ...]
    # Catalogs the tier may use; left out of the JSON when empty (configs without catalogs
    # keep their bytes and generation).
    catalogs: tuple[TierCatalog, ...] = Field(default=(), exclude_if=_empty)
    default_class: RequestClass = RequestClass.STANDARD
    limits: Limits = Limits()
    budget: Budget | None = None
    upstream: TierUpstream = TierUpstream()
    # Left out of the JSON when it is the default (as are the other fields added since v1's
    # first release), so a config that does not use it reads the same to older gateways.
    routing: TierRouting = Field(
        default=TierRouting(), exclude_if=lambda routing: routing == TierRouting()
    )
    # The name of each key of ``key_sha256`` (sorted by digest), for spend and last use per key.
    key_names: tuple[KeyName, ...] = Field(
        default=(), max_length=MAX_KEYS_PER_TIER, exclude_if=_empty
    )
    credits: Credits | None = Field(default=None, exclude_if=lambda credits: credits is None)
    # Label the token and cost metrics with the key's name (bounded by the tier's keys).
    per_key_metrics: bool = Field(default=False, exclude_if=lambda enabled: not enabled)

    @field_validator("key_sha256")
    @classmethod
    def _digests(cls, digests: tuple[str, ...]) -> tuple[str, ...]:
        # Checked in C (a Python loop per character took most of a large config's parse time).
        if set(map(len, digests)) - {64} or not _LOWER_HEX.fullmatch("".join(digests)):
            raise ValueError("key_sha256 holds something that is not a hex SHA-256 digest")
        return digests

    @model_validator(mode="after")
    def _expiry_of_own_keys(self) -> Tier:
        expiring = [entry.sha256 for entry in self.key_expiry]
        if len(expiring) != len(set(expiring)):
            raise ValueError(f"tier {self.name!r}: a key has more than one expiry")
        if not set(expiring) <= set(self.key_sha256):
            raise ValueError(f"tier {self.name!r}: key_expiry names a key not in key_sha256")
        named = [entry.sha256 for entry in self.key_names]
        if len(named) != len(set(named)) or not set(named) <= set(self.key_sha256):
            raise ValueError(f"tier {self.name!r}: key_names must name keys of key_sha256 once")
        return self


class GatewayConfig(_Frozen):
    version: Literal["tiergate.dev/gateway-config/v1"] = "tiergate.dev/gateway-config/v1"
    # Content hash of everything below, set by the operator; identifies the config.
    generation: str = Field(min_length=1, max_length=64)
    gateway: str = Field(min_length=1, max_length=253)
    namespace: str = Field(min_length=1, max_length=63)
    routes: tuple[Route, ...] = ()
    tiers: tuple[Tier, ...] = ()
    # Each catalog once per gateway, however many tiers use it (tiers name it).
    catalogs: tuple[Catalog, ...] = Field(default=(), exclude_if=_empty)

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        models = [route.model for route in self.routes]
        if len(models) != len(set(models)):
            raise ValueError("route models are not unique")
        self._catalogs_consistent(models)
        tiers = [tier.name for tier in self.tiers]
        if len(tiers) != len(set(tiers)):
            raise ValueError("tier names are not unique")
        owners: dict[str, str] = {}
        for tier in self.tiers:
            for digest in tier.key_sha256:
                if owners.setdefault(digest, tier.name) != tier.name:
                    raise ValueError(
                        f"a client key is shared by tiers {owners[digest]!r} and {tier.name!r}"
                    )
            unknown = set(tier.models) - set(models)
            if unknown:
                raise ValueError(f"tier {tier.name!r} allows unknown models {sorted(unknown)}")
            unknown = {c.name for c in tier.catalogs} - {c.name for c in self.catalogs}
            if unknown:
                raise ValueError(f"tier {tier.name!r} allows unknown catalogs {sorted(unknown)}")
        return self

    def _catalogs_consistent(self, route_models: list[str]) -> None:
        """A name a request can ask for leads to one place: route aliases, catalog names (the
        breakers' and metrics' route key) and catalog models are distinct, and so are patterns."""
        claimed = {model: f"route {model!r}" for model in route_models}
        prefixes: dict[str, str] = {}
        for catalog in self.catalogs:
            for name in (catalog.name, *(m.model for m in catalog.models)):
                if name in claimed:
                    raise ValueError(f"catalog {catalog.name!r}: {name!r} is also {claimed[name]}")
                claimed[name] = f"in catalog {catalog.name!r}"
            for pattern in catalog.patterns:
                other = prefixes.setdefault(pattern.prefix, catalog.name)
                if other != catalog.name:
                    raise ValueError(
                        f"catalogs {other!r} and {catalog.name!r} both pass {pattern.prefix!r}*"
                    )
