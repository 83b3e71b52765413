"""Operator settings: what every rendered gateway shares. Loaded from ``TIERGATE_*``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from tiergate_operator.models import ResourceList, Resources

__all__ = ["OperatorSettings", "SettingsError", "load_operator_settings"]

_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


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
    redis_url: str | None = None
    gateway_service_account: str = "tiergate-gateway"
    prefix: str = "tiergate.dev"

    def __post_init__(self) -> None:
        if self.image_pull_policy not in _PULL_POLICIES:
            raise SettingsError(f"image pull policy {self.image_pull_policy!r} is not one of {_PULL_POLICIES}")
        if self.shared_replicas < 1:
            raise SettingsError("the shared pool needs at least one replica")


def _resources(env: Mapping[str, str], scope: str, default: Resources) -> Resources:
    def pick(kind: str, resource: str, fallback: ResourceList | None) -> str | int | None:
        value = env.get(f"TIERGATE_{scope}_{resource.upper()}_{kind.upper()}")
        return value if value else getattr(fallback, resource) if fallback else None

    return Resources(
        requests=ResourceList(cpu=pick("request", "cpu", default.requests),
                              memory=pick("request", "memory", default.requests)),
        limits=ResourceList(cpu=pick("limit", "cpu", default.limits),
                            memory=pick("limit", "memory", default.limits)),
    )


def load_operator_settings(env: Mapping[str, str] | None = None) -> OperatorSettings:
    """Settings from ``TIERGATE_*`` variables; unset ones keep their defaults.

    TIERGATE_GATEWAY_IMAGE, TIERGATE_GATEWAY_PULL_POLICY, TIERGATE_SHARED_REPLICAS,
    TIERGATE_{SHARED,DEDICATED}_{CPU,MEMORY}_{REQUEST,LIMIT}, TIERGATE_REDIS_URL,
    TIERGATE_GATEWAY_SERVICE_ACCOUNT, TIERGATE_PREFIX.
    """
    env = os.environ if env is None else env
    defaults = OperatorSettings()
    replicas = env.get("TIERGATE_SHARED_REPLICAS") or str(defaults.shared_replicas)
    if not replicas.isdigit():
        raise SettingsError(f"TIERGATE_SHARED_REPLICAS={replicas!r} is not a whole number")
    try:
        return OperatorSettings(
            gateway_image=env.get("TIERGATE_GATEWAY_IMAGE") or defaults.gateway_image,
            image_pull_policy=env.get("TIERGATE_GATEWAY_PULL_POLICY") or defaults.image_pull_policy,
            shared_replicas=int(replicas),
            shared_resources=_resources(env, "SHARED", defaults.shared_resources),
            dedicated_resources=_resources(env, "DEDICATED", defaults.dedicated_resources),
            redis_url=env.get("TIERGATE_REDIS_URL") or None,
            gateway_service_account=(env.get("TIERGATE_GATEWAY_SERVICE_ACCOUNT")
                                     or defaults.gateway_service_account),
            prefix=env.get("TIERGATE_PREFIX") or defaults.prefix,
        )
    except ValueError as error:
        raise SettingsError(str(error)) from error
