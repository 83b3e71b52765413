"""Pydantic views of the ``ModelRoute`` and ``ApiKeyTier`` custom resources.

The CRD YAML under ``crds/`` is the source of truth; these models mirror it field by
field (names, required-ness, enums, bounds, defaults) and ``tests/crds`` fails on drift.
Specs are strict and forbid unknown fields; statuses tolerate fields written by others.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from tiergate_operator.registry import CRD_API_VERSION

__all__ = [
    "ApiKeyTier",
    "ApiKeyTierSpec",
    "ApiKeyTierStatus",
    "Autoscaling",
    "Budget",
    "Catalog",
    "CatalogModel",
    "CatalogPattern",
    "CircuitBreaker",
    "Condition",
    "ConditionStatus",
    "CreditGrant",
    "Credits",
    "Failover",
    "Isolation",
    "KeyPolicy",
    "KeySource",
    "LatencyObjective",
    "LedgerKey",
    "LedgerMonth",
    "LedgerStatus",
    "Limits",
    "ModelRoute",
    "ModelRouteSpec",
    "ModelRouteStatus",
    "ObjectMeta",
    "PodDisruptionBudget",
    "Pricing",
    "RequestClass",
    "ResourceList",
    "Resources",
    "SecretKeyRef",
    "SecretRef",
    "ServiceLevelObjectives",
    "SpendKey",
    "SpendOtherKeys",
    "SpendStatus",
    "Target",
    "TierCatalog",
    "Timeouts",
    "Upstream",
]

RequestClass = Literal["Standard", "Premium"]
Isolation = Literal["Dedicated", "Shared"]
ConditionStatus = Literal["True", "False", "Unknown"]

_DECIMAL_USD = r"^(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?$"
_QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_RFC3339 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})$"
)
_CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)

# An objective as a percent: "90" to "99.999" (100 would leave no error budget to burn).
ObjectivePercent = Annotated[
    str, StringConstraints(max_length=6, pattern=r"^9[0-9](\.[0-9]{1,3})?$")
]
DecimalUSD = Annotated[str, StringConstraints(max_length=16, pattern=_DECIMAL_USD)]
Quantity = int | Annotated[str, StringConstraints(pattern=_QUANTITY)]
IntOrPercent = int | Annotated[str, StringConstraints(pattern=r"^([0-9]+%?)$")]
ObjectName = Annotated[str, StringConstraints(min_length=1, max_length=253)]


class _Spec(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class _Status(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class SecretKeyRef(_Spec):
    name: ObjectName
    key: ObjectName


class SecretRef(_Spec):
    name: ObjectName


class Pricing(_Spec):
    input_per_million: DecimalUSD = Field(alias="inputPerMillion")
    output_per_million: DecimalUSD = Field(alias="outputPerMillion")


class Target(_Spec):
    name: Annotated[
        str,
        StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
    ]
    base_url: Annotated[
        str, StringConstraints(min_length=1, max_length=2048, pattern=r"^https?://[^\s]+$")
    ] = Field(alias="baseURL")
    credentials_secret_ref: SecretKeyRef | None = Field(default=None, alias="credentialsSecretRef")
    upstream_model: ObjectName | None = Field(default=None, alias="upstreamModel")
    weight: int = Field(default=1, ge=0, le=1000)
    priority: int = Field(default=0, ge=0, le=100)
    request_class: RequestClass = Field(default="Standard", alias="class")
    pricing: Pricing | None = None


class CircuitBreaker(_Spec):
    consecutive_failures: int | None = Field(
        default=None, ge=1, le=1000, alias="consecutiveFailures"
    )
    cooldown_seconds: int | None = Field(default=None, ge=1, le=3600, alias="cooldownSeconds")


class Failover(_Spec):
    statuses: list[Annotated[int, Field(ge=100, le=599)]] | None = Field(
        default=None, max_length=16
    )
    on_timeout: bool | None = Field(default=None, alias="onTimeout")
    max_attempts: int | None = Field(default=None, ge=1, le=10, alias="maxAttempts")
    circuit_breaker: CircuitBreaker | None = Field(default=None, alias="circuitBreaker")

    @field_validator("statuses")
    @classmethod
    def _retryable(cls, statuses: list[int] | None) -> list[int] | None:
        if statuses is not None:
            if len(set(statuses)) != len(statuses):
                raise ValueError("failover statuses must be unique")
            if not all(s == 429 or 500 <= s <= 599 for s in statuses):
                raise ValueError("failover statuses must be 429 or 5xx")
        return statuses


class Timeouts(_Spec):
    connect_seconds: int | None = Field(default=None, ge=1, le=600, alias="connectSeconds")
    first_byte_seconds: int | None = Field(default=None, ge=1, le=3600, alias="firstByteSeconds")
    first_token_seconds: int | None = Field(default=None, ge=1, le=3600, alias="firstTokenSeconds")
    total_seconds: int | None = Field(default=None, ge=1, le=7200, alias="totalSeconds")
    request_seconds: int | None = Field(default=None, ge=1, le=7200, alias="requestSeconds")

    @model_validator(mode="after")
    def _within_total(self) -> Timeouts:
        if self.total_seconds is not None:
            if self.connect_seconds is not None and self.connect_seconds > self.total_seconds:
                raise ValueError("timeouts.connectSeconds must not exceed timeouts.totalSeconds")
            if self.first_byte_seconds is not None and self.first_byte_seconds > self.total_seconds:
                raise ValueError("timeouts.firstByteSeconds must not exceed timeouts.totalSeconds")
            if (
                self.first_token_seconds is not None
                and self.first_token_seconds > self.total_seconds
            ):
                raise ValueError("timeouts.firstTokenSeconds must not exceed timeouts.totalSeconds")
        return self


_MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=_MODEL_NAME)]
_PATTERN = re.compile(r"^[A-Za-z0-9._:/-]*[*]$")


class CatalogModel(_Spec):
    model: ModelName
    upstream_model: ObjectName | None = Field(default=None, alias="upstreamModel")
    pricing: Pricing | None = None


class CatalogPattern(_Spec):
    pattern: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    pricing: Pricing | None = None

    @field_validator("pattern")
    @classmethod
    def _prefix_and_star(cls, pattern: str) -> str:
        if not _PATTERN.fullmatch(pattern):
            raise ValueError(
                "a pattern is a model-name prefix ending in a single *, e.g. deepseek-ai/*"
            )
        return pattern


class Catalog(_Spec):
    models: list[CatalogModel] | None = Field(default=None, max_length=2048)
    patterns: list[CatalogPattern] | None = Field(default=None, max_length=64)
    default_pricing: Pricing | None = Field(default=None, alias="defaultPricing")

    @model_validator(mode="after")
    def _servable(self) -> Catalog:
        if not self.models and not self.patterns:
            raise ValueError("a catalog needs at least one model or pattern")
        for entries, key in ((self.models, "model"), (self.patterns, "pattern")):
            names = [getattr(entry, key) for entry in entries or ()]
            if len(set(names)) != len(names):
                raise ValueError(f"catalog {key}s must be unique")
        if self.default_pricing is None and any(p.pricing is None for p in self.patterns or ()):
            raise ValueError(
                "a pattern without its own pricing needs catalog.defaultPricing "
                "(every model served has a price)"
            )
        return self


class ModelRouteSpec(_Spec):
    model: ModelName | None = None
    catalog: Catalog | None = None
    targets: list[Target] = Field(min_length=1, max_length=32)
    failover: Failover | None = None
    timeouts: Timeouts | None = None

    @model_validator(mode="after")
    def _model_or_catalog(self) -> ModelRouteSpec:
        if (self.model is None) == (self.catalog is None):
            raise ValueError("set exactly one of model (one alias) and catalog (many models)")
        if self.catalog is None and any(t.upstream_model is None for t in self.targets):
            raise ValueError("every target of a route with a model needs upstreamModel")
        if self.catalog is not None and any(
            t.upstream_model is not None or t.pricing is not None for t in self.targets
        ):
            raise ValueError(
                "targets of a catalog set neither upstreamModel nor pricing "
                "(each catalog model has its own)"
            )
        return self

    @field_validator("targets")
    @classmethod
    def _servable(cls, targets: list[Target]) -> list[Target]:
        names = [target.name for target in targets]
        if len(set(names)) != len(names):
            raise ValueError("target names must be unique")
        standard = [t for t in targets if t.request_class == "Standard"]
        lowest = min((t.priority for t in standard), default=None)
        if not any(t.weight > 0 for t in standard if t.priority == lowest):
            raise ValueError(
                "among Standard-class targets, those of the lowest priority must include one with weight > 0"
            )
        return targets


class TierCatalog(_Spec):
    route: ObjectName
    models: list[Annotated[str, StringConstraints(min_length=1, max_length=253)]] = Field(
        min_length=1, max_length=64
    )

    @field_validator("models")
    @classmethod
    def _names_or_patterns(cls, models: list[str]) -> list[str]:
        if len(set(models)) != len(models):
            raise ValueError("catalogs[].models must be unique")
        for model in models:
            if not (re.fullmatch(_MODEL_NAME, model) or _PATTERN.fullmatch(model)):
                raise ValueError(
                    "catalogs[].models holds model names or patterns ending in a single *, "
                    "e.g. deepseek-ai/*"
                )
        return models


class KeySource(_Spec):
    secret_ref: SecretRef = Field(alias="secretRef")
    expires_at: Annotated[str, StringConstraints(max_length=35, pattern=_RFC3339)] | None = Field(
        default=None, alias="expiresAt"
    )
    disabled: bool | None = None

    @field_validator("expires_at")
    @classmethod
    def _a_moment(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"expiresAt {value!r} is not an RFC 3339 time") from None
        return value

    @property
    def expiry(self) -> datetime | None:
        """``expires_at`` as a moment in UTC."""
        if self.expires_at is None:
            return None
        return datetime.fromisoformat(self.expires_at).astimezone(UTC)


class KeyPolicy(_Spec):
    max_age_days: int | None = Field(default=None, ge=1, le=3650, alias="maxAgeDays")
    grace_days: int | None = Field(default=None, ge=0, le=3650, alias="graceDays")
    expiry_warning_days: int = Field(default=14, ge=1, le=365, alias="expiryWarningDays")

    @model_validator(mode="after")
    def _grace_after_max_age(self) -> KeyPolicy:
        if self.grace_days is not None and self.max_age_days is None:
            raise ValueError("keyPolicy.graceDays needs keyPolicy.maxAgeDays")
        return self


class Limits(_Spec):
    requests_per_minute: int | None = Field(
        default=None, ge=1, le=100_000_000, alias="requestsPerMinute"
    )
    tokens_per_minute: int | None = Field(
        default=None, ge=1, le=1_000_000_000_000, alias="tokensPerMinute"
    )
    concurrent_requests: int | None = Field(
        default=None, ge=1, le=1_000_000, alias="concurrentRequests"
    )


class Budget(_Spec):
    monthly_usd: DecimalUSD = Field(alias="monthlyUSD")
    soft_threshold_percent: int = Field(default=80, ge=1, le=100, alias="softThresholdPercent")
    hard_threshold_percent: int = Field(default=100, ge=1, le=100, alias="hardThresholdPercent")

    @model_validator(mode="after")
    def _ordered(self) -> Budget:
        if self.soft_threshold_percent >= self.hard_threshold_percent:
            raise ValueError(
                "budget.softThresholdPercent must be below budget.hardThresholdPercent"
            )
        return self


class CreditGrant(_Spec):
    id: Annotated[
        str,
        StringConstraints(
            min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([-._A-Za-z0-9]*[A-Za-z0-9])?$"
        ),
    ]
    amount_usd: DecimalUSD = Field(alias="amountUSD")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class Credits(_Spec):
    grants: list[CreditGrant] | None = Field(default=None, max_length=256)
    warn_below_usd: DecimalUSD | None = Field(default=None, alias="warnBelowUSD")

    @field_validator("grants")
    @classmethod
    def _distinct_ids(cls, grants: list[CreditGrant] | None) -> list[CreditGrant] | None:
        ids = [grant.id for grant in grants or ()]
        if len(set(ids)) != len(ids):
            raise ValueError("credits.grants must have distinct ids")
        return grants


class Upstream(_Spec):
    credentials_secret_ref: SecretKeyRef | None = Field(default=None, alias="credentialsSecretRef")
    model_prefix: str | None = Field(default=None, max_length=253, alias="modelPrefix")


class Hedge(_Spec):
    after_milliseconds: int = Field(ge=10, le=60_000, alias="afterMilliseconds")
    max_extra_attempts: int = Field(default=1, ge=1, le=3, alias="maxExtraAttempts")


class Routing(_Spec):
    strategy: Literal["Weighted", "CostFirst", "LatencyFirst"] | None = None
    hedge: Hedge | None = None


class Autoscaling(_Spec):
    min_replicas: int = Field(default=1, ge=1, le=100, alias="minReplicas")
    max_replicas: int = Field(ge=1, le=100, alias="maxReplicas")
    target_cpu_utilization_percentage: int = Field(
        default=80, ge=1, le=100, alias="targetCPUUtilizationPercentage"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
        return self


class ResourceList(_Spec):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class Resources(_Spec):
    requests: ResourceList | None = None
    limits: ResourceList | None = None


class PodDisruptionBudget(_Spec):
    min_available: IntOrPercent | None = Field(default=None, alias="minAvailable")
    max_unavailable: IntOrPercent | None = Field(default=None, alias="maxUnavailable")

    @model_validator(mode="after")
    def _exactly_one(self) -> PodDisruptionBudget:
        if (self.min_available is None) == (self.max_unavailable is None):
            raise ValueError(
                "podDisruptionBudget needs exactly one of minAvailable and maxUnavailable"
            )
        return self


class LatencyObjective(_Spec):
    threshold_milliseconds: int = Field(ge=1, le=600_000, alias="thresholdMilliseconds")
    percentile: ObjectivePercent


class ServiceLevelObjectives(_Spec):
    availability_percent: ObjectivePercent | None = Field(default=None, alias="availabilityPercent")
    latency: LatencyObjective | None = None

    @model_validator(mode="after")
    def _some_objective(self) -> ServiceLevelObjectives:
        if self.availability_percent is None and self.latency is None:
            raise ValueError("slo needs availabilityPercent, latency or both")
        return self


class ApiKeyTierSpec(_Spec):
    isolation: Isolation
    keys: list[KeySource] = Field(min_length=1, max_length=16)
    key_policy: KeyPolicy | None = Field(default=None, alias="keyPolicy")
    models: list[ObjectName] | None = Field(default=None, max_length=256)
    catalogs: list[TierCatalog] | None = Field(default=None, max_length=32)
    default_class: RequestClass | None = Field(default=None, alias="defaultClass")
    limits: Limits | None = None
    budget: Budget | None = None
    credits: Credits | None = None
    per_key_metrics: bool | None = Field(default=None, alias="perKeyMetrics")
    upstream: Upstream | None = None
    routing: Routing | None = None
    replicas: int | None = Field(default=None, ge=1, le=100)
    autoscaling: Autoscaling | None = None
    resources: Resources | None = None
    pod_disruption_budget: PodDisruptionBudget | None = Field(
        default=None, alias="podDisruptionBudget"
    )
    slo: ServiceLevelObjectives | None = None

    @field_validator("keys")
    @classmethod
    def _distinct_secrets(cls, keys: list[KeySource]) -> list[KeySource]:
        names = [key.secret_ref.name for key in keys]
        if len(set(names)) != len(names):
            raise ValueError("keys must reference distinct Secrets")
        return keys

    @field_validator("models")
    @classmethod
    def _unique_models(cls, models: list[str] | None) -> list[str] | None:
        if models is not None and len(set(models)) != len(models):
            raise ValueError("models must be unique")
        return models

    @field_validator("catalogs")
    @classmethod
    def _one_entry_per_catalog(cls, catalogs: list[TierCatalog] | None) -> list[TierCatalog] | None:
        routes = [c.route for c in catalogs or ()]
        if len(set(routes)) != len(routes):
            raise ValueError("catalogs must name distinct routes")
        return catalogs

    @model_validator(mode="after")
    def _isolation_fields(self) -> ApiKeyTierSpec:
        dedicated_only = (
            self.replicas,
            self.autoscaling,
            self.resources,
            self.pod_disruption_budget,
        )
        if self.isolation != "Dedicated" and any(field is not None for field in dedicated_only):
            raise ValueError(
                "replicas, autoscaling, resources and podDisruptionBudget are only allowed "
                "when isolation is Dedicated"
            )
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("replicas and autoscaling are mutually exclusive")
        if self.models is not None and any(c.route not in self.models for c in self.catalogs or ()):
            raise ValueError(
                "every catalogs[].route must also be in models (or omit models to allow every route)"
            )
        return self


class Condition(_Status):
    type: Annotated[str, StringConstraints(max_length=316, pattern=_CONDITION_TYPE)]
    status: ConditionStatus
    observed_generation: int | None = Field(default=None, ge=0, alias="observedGeneration")
    last_transition_time: str = Field(alias="lastTransitionTime")
    reason: Annotated[
        str,
        StringConstraints(
            min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
        ),
    ]
    message: str = Field(max_length=32768)


class ModelRouteStatus(_Status):
    observed_generation: int | None = Field(default=None, ge=0, alias="observedGeneration")
    conditions: list[Condition] | None = Field(default=None, max_length=8)
    catalog: str | None = Field(default=None, max_length=64)
    gateways: list[Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        default=None, max_length=1024
    )


_MONTH = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
KeyName = Annotated[str, StringConstraints(min_length=1, max_length=507)]
StatusUSD = Annotated[str, StringConstraints(max_length=32)]


class LedgerKey(_Status):
    key: KeyName
    spent_nano: int = Field(ge=0, alias="spentNano")
    calls: int = Field(ge=0)
    last_used_at: str | None = Field(default=None, alias="lastUsedAt")


class LedgerMonth(_Status):
    month: Annotated[str, StringConstraints(max_length=7, pattern=_MONTH)]
    spent_nano: int = Field(ge=0, alias="spentNano")
    calls: int = Field(ge=0)
    keys: list[LedgerKey] | None = Field(default=None, max_length=201)


class LedgerStatus(_Status):
    """``status.ledger``: the wire form of ``tiergate_contract.ledger.TierLedger``."""

    lifetime_nano: int | None = Field(default=None, ge=0, alias="lifetimeNano")
    lifetime_calls: int | None = Field(default=None, ge=0, alias="lifetimeCalls")
    months: list[LedgerMonth] | None = Field(default=None, max_length=3)
    last_used: list[LedgerKey] | None = Field(default=None, max_length=800, alias="lastUsed")
    folded: list[Annotated[str, StringConstraints(max_length=253)]] | None = Field(
        default=None, max_length=256
    )


class SpendKey(_Status):
    key: Annotated[str, StringConstraints(max_length=507)]
    month_usd: StatusUSD = Field(alias="monthUSD")
    calls: int = Field(ge=0)
    last_used_at: str | None = Field(default=None, alias="lastUsedAt")


class SpendOtherKeys(_Status):
    count: int = Field(ge=0)
    month_usd: StatusUSD = Field(alias="monthUSD")
    calls: int = Field(ge=0)


class SpendStatus(_Status):
    """``status.spend``: the tier's money for people and ``kubectl get akt``."""

    month: Annotated[str, StringConstraints(max_length=7, pattern=_MONTH)]
    month_usd: StatusUSD = Field(alias="monthUSD")
    month_calls: int | None = Field(default=None, ge=0, alias="monthCalls")
    lifetime_usd: StatusUSD = Field(alias="lifetimeUSD")
    budget_usd: StatusUSD | None = Field(default=None, alias="budgetUSD")
    credits_granted_usd: StatusUSD | None = Field(default=None, alias="creditsGrantedUSD")
    credits_used_usd: StatusUSD | None = Field(default=None, alias="creditsUsedUSD")
    credits_remaining_usd: StatusUSD | None = Field(default=None, alias="creditsRemainingUSD")
    keys: list[SpendKey] | None = Field(default=None, max_length=20)
    other_keys: SpendOtherKeys | None = Field(default=None, alias="otherKeys")
    updated_at: str = Field(alias="updatedAt")


class ApiKeyTierStatus(_Status):
    observed_generation: int | None = Field(default=None, ge=0, alias="observedGeneration")
    conditions: list[Condition] | None = Field(default=None, max_length=8)
    gateway: str | None = Field(default=None, max_length=63)
    replicas: int | None = Field(default=None, ge=0)
    ready_replicas: int | None = Field(default=None, ge=0, alias="readyReplicas")
    ledger: LedgerStatus | None = None
    spend: SpendStatus | None = None


class ObjectMeta(_Status):
    name: str
    namespace: str = ""
    uid: str = ""
    generation: int = 0
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    deletion_timestamp: str | None = Field(default=None, alias="deletionTimestamp")


class _Resource(_Status):
    api_version: str = Field(default=CRD_API_VERSION, alias="apiVersion")
    metadata: ObjectMeta


class ModelRoute(_Resource):
    kind: Literal["ModelRoute"] = "ModelRoute"
    spec: ModelRouteSpec
    status: ModelRouteStatus | None = None


class ApiKeyTier(_Resource):
    kind: Literal["ApiKeyTier"] = "ApiKeyTier"
    spec: ApiKeyTierSpec
    status: ApiKeyTierStatus | None = None

    @model_validator(mode="after")
    def _slo_rule_name(self) -> ApiKeyTier:
        if self.spec.slo is not None and len(self.metadata.name) > 240:
            raise ValueError(
                "a tier with an slo must have a name of at most 240 characters "
                "(its PrometheusRule is tiergate-slo-<name>)"
            )
        return self

    @model_validator(mode="after")
    def _gateway_name(self) -> ApiKeyTier:
        if self.spec.isolation == "Dedicated":
            name = self.metadata.name
            if name == "shared":
                raise ValueError(
                    "a Dedicated tier must not be named shared "
                    "(its gateway would be the shared pool, tiergate-shared)"
                )
            if len(name) > 54 or "." in name:
                raise ValueError(
                    "a Dedicated tier's name must be a DNS label of at most 54 characters "
                    "(its gateway is tiergate-<name>)"
                )
        return self
