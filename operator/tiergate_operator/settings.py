"""Operator settings: what every rendered gateway shares. Loaded from ``TIERGATE_*``."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from urllib.parse import parse_qs, urlsplit

from pydantic import TypeAdapter, ValidationError

from tiergate_contract.ledger import (
    DEFAULT_SPEND_HEARTBEAT_SECONDS,
    DEFAULT_SPEND_REPORT_SECONDS,
    quiet_report_max_age,
)
from tiergate_operator.gateway_tuning import TuningError, chart_key, parse_tuning, tuned
from tiergate_operator.models import Quantity, ResourceList, Resources, SecretKeyRef
from tiergate_operator.registry import DEFAULT_PREFIX, PrefixedKeys, is_label_prefix

__all__ = [
    "DEFAULT_REDIS_SECRET_KEY",
    "OperatorSettings",
    "ReadinessEndpoint",
    "SettingsError",
    "load_operator_settings",
    "prefix_from_env",
    "readiness_endpoint",
]

_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
# A Secret's name (a DNS subdomain) and a key of its data.
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
DEFAULT_REDIS_SECRET_KEY = "redis-url"
_QUANTITY = TypeAdapter(Quantity)


class SettingsError(ValueError):
    """A ``TIERGATE_*`` variable holds something unusable."""


def _default_resources() -> Resources:
    return Resources(
        requests=ResourceList(cpu="100m", memory="128Mi"),
        limits=ResourceList(cpu="1", memory="512Mi"),
    )


@dataclass(frozen=True)
class OperatorSettings:
    gateway_image: str = "ghcr.io/tiergate/tiergate-gateway:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    shared_replicas: int = 2
    shared_resources: Resources = field(default_factory=_default_resources)
    dedicated_resources: Resources = field(default_factory=_default_resources)
    # Redis for limits and budgets shared across replicas: either a URL without credentials,
    # rendered as a plain env value, or a Secret in each gateway's namespace holding the URL
    # (the gateways read it through secretKeyRef; the operator never sees the value).
    redis_url: str | None = None
    redis_secret: SecretKeyRef | None = None
    gateway_service_account: str = "tiergate-gateway"
    prefix: str = DEFAULT_PREFIX  # of the labels and annotations the operator writes and reads
    # Every gateway container's ephemeral storage (its /tmp emptyDir of at most 64Mi, its logs).
    ephemeral_storage_request: str = "64Mi"
    ephemeral_storage_limit: str = "256Mi"
    # The gateways' tuning variables (chart gateway.tuning), checked by ``parse_tuning``.
    gateway_tuning: tuple[tuple[str, str], ...] = ()
    # On SIGTERM a gateway answers /readyz with 503 but keeps serving for the drain delay
    # (while its endpoint leaves every Service and load balancer), then stops accepting and
    # gives in-flight requests, streams included, the grace period to finish.
    gateway_drain_delay_seconds: int = 5
    gateway_grace_seconds: int = 25
    # A SpendReport not written for this long belongs to a process that ended (a live gateway
    # heartbeats every 60 s): its money is folded into the tiers' ledgers (docs/ledger.md).
    # It must exceed 2 x the gateways' heartbeat + their report interval (quiet_report_max_age).
    ledger_stale_seconds: int = 600

    def __post_init__(self) -> None:
        if not is_label_prefix(self.prefix):
            raise SettingsError(
                f"TIERGATE_PREFIX={self.prefix!r} is not a DNS subdomain, so no label prefix"
            )
        if self.image_pull_policy not in _PULL_POLICIES:
            raise SettingsError(
                f"image pull policy {self.image_pull_policy!r} is not one of {_PULL_POLICIES}"
            )
        if self.shared_replicas < 1:
            raise SettingsError("the shared pool needs at least one replica")
        if not 0 <= self.gateway_drain_delay_seconds <= 300:
            raise SettingsError(
                f"TIERGATE_GATEWAY_DRAIN_DELAY_SECONDS={self.gateway_drain_delay_seconds} "
                "is not between 0 and 300"
            )
        if not 1 <= self.gateway_grace_seconds <= 3600:
            raise SettingsError(
                f"TIERGATE_GATEWAY_GRACE_SECONDS={self.gateway_grace_seconds} "
                "is not between 1 and 3600"
            )
        if not 1 <= self.ledger_stale_seconds <= 86_400:
            raise SettingsError(
                f"TIERGATE_LEDGER_STALE_SECONDS={self.ledger_stale_seconds} "
                "is not between 1 and 86400"
            )
        if problem := _stale_problem(self.ledger_stale_seconds, self.gateway_tuning):
            raise SettingsError(problem)
        if self.redis_url and self.redis_secret:
            raise SettingsError(
                "set either TIERGATE_REDIS_URL or TIERGATE_REDIS_SECRET_NAME, not both"
            )
        if self.redis_url and _carries_password(self.redis_url):
            raise SettingsError(
                "TIERGATE_REDIS_URL carries a password, which the operator would write in plain text "
                "into every gateway Deployment; put the URL in a Secret in each gateway namespace and "
                "set TIERGATE_REDIS_SECRET_NAME (and TIERGATE_REDIS_SECRET_KEY, default "
                f"{DEFAULT_REDIS_SECRET_KEY!r}) instead (chart: gateway.redis.secretRef)"
            )
        for variable, quantity in (
            ("TIERGATE_GATEWAY_EPHEMERAL_STORAGE_REQUEST", self.ephemeral_storage_request),
            ("TIERGATE_GATEWAY_EPHEMERAL_STORAGE_LIMIT", self.ephemeral_storage_limit),
        ):
            try:
                _QUANTITY.validate_python(quantity)
            except ValidationError:
                raise SettingsError(
                    f"{variable}={quantity!r} is not a Kubernetes quantity (e.g. 64Mi)"
                ) from None
        if self.redis_secret is not None:
            if len(self.redis_secret.name) > 253 or not _SECRET_NAME.match(self.redis_secret.name):
                raise SettingsError(
                    f"TIERGATE_REDIS_SECRET_NAME={self.redis_secret.name!r} is not a valid Secret name"
                )
            if not _SECRET_KEY.match(self.redis_secret.key):
                raise SettingsError(
                    f"TIERGATE_REDIS_SECRET_KEY={self.redis_secret.key!r} is not a valid Secret key"
                )

    @cached_property
    def keys(self) -> PrefixedKeys:
        return PrefixedKeys(self.prefix)


def prefix_from_env(env: Mapping[str, str] | None = None) -> str:
    """The prefix the operator uses, for tools that read what it wrote (``tiergate status``)."""
    return (os.environ if env is None else env).get("TIERGATE_PREFIX") or DEFAULT_PREFIX


def _spend_seconds(
    tuning: tuple[tuple[str, str], ...], name: str, default: float
) -> tuple[Decimal, str]:
    """A gateway's report timing as tuned, or its default; and how to name it in a message."""
    value = tuned(tuning, name)
    seconds = Decimal(str(default) if value is None else value)
    shown = format(seconds.normalize(), "f")
    return seconds, f"{chart_key(name)} ({shown}{', the gateway default' if value is None else ''})"


def _stale_problem(stale_seconds: int, tuning: tuple[tuple[str, str], ...]) -> str | None:
    """Why a stale threshold would fold the reports of live gateways, or None. After the
    value, worded as the chart's check (``tiergate.checkLedgerTiming`` in _helpers.tpl)."""
    report, report_text = _spend_seconds(
        tuning, "spend_report_seconds", DEFAULT_SPEND_REPORT_SECONDS
    )
    heartbeat, heartbeat_text = _spend_seconds(
        tuning, "spend_heartbeat_seconds", DEFAULT_SPEND_HEARTBEAT_SECONDS
    )
    floor = quiet_report_max_age(report, heartbeat)
    if stale_seconds > floor:
        return None
    return (
        f"TIERGATE_LEDGER_STALE_SECONDS={stale_seconds} (chart ledger.staleSeconds) must be"
        f" greater than 2 x {heartbeat_text}"
        f" + {report_text} = {format(floor.normalize(), 'f')}: a quiet gateway writes its"
        " SpendReport only every heartbeat, so the operator would fold the reports of live"
        " gateways (docs/ledger.md)"
    )


def _carries_password(url: str) -> bool:
    """Does a Redis URL hold a password: ``redis://user:pw@host`` or ``?password=`` (redis-py)?"""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        # Unparseable (e.g. a bad port): refuse it if it might hide credentials.
        return "@" in url or "password" in url.lower()
    query = {key.lower() for key in parse_qs(parts.query, keep_blank_values=True)}
    return bool(password) or "password" in query


def _resources(env: Mapping[str, str], scope: str, default: Resources) -> Resources:
    def pick(kind: str, resource: str, fallback: ResourceList | None) -> str | int | None:
        value = env.get(f"TIERGATE_{scope}_{resource.upper()}_{kind.upper()}")
        return value if value else getattr(fallback, resource) if fallback else None

    return Resources(
        requests=ResourceList(
            cpu=pick("request", "cpu", default.requests),
            memory=pick("request", "memory", default.requests),
        ),
        limits=ResourceList(
            cpu=pick("limit", "cpu", default.limits), memory=pick("limit", "memory", default.limits)
        ),
    )


def _whole_number(env: Mapping[str, str], variable: str, default: int) -> int:
    value = env.get(variable) or str(default)
    if not value.isdigit():
        raise SettingsError(f"{variable}={value!r} is not a whole number")
    return int(value)


def load_operator_settings(env: Mapping[str, str] | None = None) -> OperatorSettings:
    """Settings from ``TIERGATE_*`` variables; unset ones keep their defaults.

    TIERGATE_GATEWAY_IMAGE, TIERGATE_GATEWAY_PULL_POLICY, TIERGATE_SHARED_REPLICAS,
    TIERGATE_{SHARED,DEDICATED}_{CPU,MEMORY}_{REQUEST,LIMIT}, TIERGATE_REDIS_URL (no password)
    or TIERGATE_REDIS_SECRET_NAME + TIERGATE_REDIS_SECRET_KEY (a Secret in each gateway
    namespace), TIERGATE_GATEWAY_SERVICE_ACCOUNT, TIERGATE_PREFIX,
    TIERGATE_GATEWAY_EPHEMERAL_STORAGE_{REQUEST,LIMIT}, TIERGATE_GATEWAY_TUNING (JSON),
    TIERGATE_GATEWAY_DRAIN_DELAY_SECONDS, TIERGATE_GATEWAY_GRACE_SECONDS,
    TIERGATE_LEDGER_STALE_SECONDS.
    """
    env = os.environ if env is None else env
    defaults = OperatorSettings()
    replicas = _whole_number(env, "TIERGATE_SHARED_REPLICAS", defaults.shared_replicas)
    drain_delay = _whole_number(
        env, "TIERGATE_GATEWAY_DRAIN_DELAY_SECONDS", defaults.gateway_drain_delay_seconds
    )
    grace = _whole_number(env, "TIERGATE_GATEWAY_GRACE_SECONDS", defaults.gateway_grace_seconds)
    stale = _whole_number(env, "TIERGATE_LEDGER_STALE_SECONDS", defaults.ledger_stale_seconds)
    secret_name = env.get("TIERGATE_REDIS_SECRET_NAME") or None
    secret_key = env.get("TIERGATE_REDIS_SECRET_KEY") or None
    if secret_key and not secret_name:
        raise SettingsError(
            "TIERGATE_REDIS_SECRET_KEY is set but TIERGATE_REDIS_SECRET_NAME is not"
        )
    try:
        return OperatorSettings(
            gateway_image=env.get("TIERGATE_GATEWAY_IMAGE") or defaults.gateway_image,
            image_pull_policy=env.get("TIERGATE_GATEWAY_PULL_POLICY") or defaults.image_pull_policy,
            shared_replicas=replicas,
            shared_resources=_resources(env, "SHARED", defaults.shared_resources),
            dedicated_resources=_resources(env, "DEDICATED", defaults.dedicated_resources),
            redis_url=env.get("TIERGATE_REDIS_URL") or None,
            redis_secret=(
                SecretKeyRef(name=secret_name, key=secret_key or DEFAULT_REDIS_SECRET_KEY)
                if secret_name
                else None
            ),
            gateway_service_account=(
                env.get("TIERGATE_GATEWAY_SERVICE_ACCOUNT") or defaults.gateway_service_account
            ),
            prefix=prefix_from_env(env),
            ephemeral_storage_request=(
                env.get("TIERGATE_GATEWAY_EPHEMERAL_STORAGE_REQUEST")
                or defaults.ephemeral_storage_request
            ),
            ephemeral_storage_limit=(
                env.get("TIERGATE_GATEWAY_EPHEMERAL_STORAGE_LIMIT")
                or defaults.ephemeral_storage_limit
            ),
            gateway_tuning=parse_tuning(env.get("TIERGATE_GATEWAY_TUNING")),
            gateway_drain_delay_seconds=drain_delay,
            gateway_grace_seconds=grace,
            ledger_stale_seconds=stale,
        )
    except TuningError as error:
        raise SettingsError(str(error)) from error
    except ValueError as error:
        raise SettingsError(str(error)) from error


@dataclass(frozen=True)
class ReadinessEndpoint:
    """Where the operator serves its readiness probe: ``http://<host>:<port><path>``."""

    host: str
    port: int
    path: str


def readiness_endpoint(env: Mapping[str, str] | None = None) -> ReadinessEndpoint | None:
    """TIERGATE_READINESS (e.g. ``http://0.0.0.0:8081/readyz``), or None when unset."""
    value = (os.environ if env is None else env).get("TIERGATE_READINESS") or ""
    if not value:
        return None
    problem = f"TIERGATE_READINESS={value!r} is not http://<host>:<port>/<path>"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise SettingsError(f"{problem}: bad port") from None
    if parts.scheme != "http":
        raise SettingsError(f"{problem}: the scheme must be http")
    if not parts.hostname or port is None or port == 0:
        raise SettingsError(f"{problem}: a host and a port (1-65535) are required")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise SettingsError(f"{problem}: no credentials, query or fragment")
    return ReadinessEndpoint(parts.hostname, port, parts.path or "/")
