"""Where a config's targets point: overriding their base URLs, and the local ports they use."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

import tiergate_contract as contract
from tiergate_cli.output import CommandError

__all__ = ["local_upstream_ports", "override_upstreams", "parse_overrides"]


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``TARGET=URL`` options (TARGET: a target name, ``route/target``, or ``*``)."""
    overrides = {}
    for item in items:
        target, sep, url = item.partition("=")
        if not sep or not target or not url.startswith(("http://", "https://")):
            raise CommandError(
                f"--upstream-override {item!r}: expected TARGET=http(s)://HOST:PORT/v1"
            )
        overrides[target] = url
    return overrides


def override_upstreams(
    config: contract.GatewayConfig, overrides: Mapping[str, str]
) -> contract.GatewayConfig:
    if not overrides:
        return config
    used: set[str] = set()

    def url(route: str, target: contract.Target | contract.CatalogTarget) -> str:
        for key in (f"{route}/{target.name}", target.name, "*"):
            if key in overrides:
                used.add(key)
                return overrides[key]
        return target.base_url

    routes = [
        route.model_copy(
            update={
                "targets": tuple(
                    target.model_copy(update={"base_url": url(route.model, target)})
                    for target in route.targets
                )
            }
        )
        for route in config.routes
    ]
    catalogs = [
        catalog.model_copy(
            update={
                "targets": tuple(
                    target.model_copy(update={"base_url": url(catalog.name, target)})
                    for target in catalog.targets
                )
            }
        )
        for catalog in config.catalogs
    ]
    unknown = sorted(set(overrides) - used)
    if unknown:
        raise CommandError(
            f"--upstream-override: no target {', '.join(unknown)} in gateway {config.gateway}"
        )
    return contract.seal(
        gateway=config.gateway,
        namespace=config.namespace,
        routes=routes,
        tiers=config.tiers,
        catalogs=catalogs,
    )


def local_upstream_ports(config: contract.GatewayConfig) -> dict[str, int]:
    """``{target name: port}`` of the targets on 127.0.0.1 (for mock upstreams)."""
    ports: dict[str, int] = {}
    targets: list[contract.Target | contract.CatalogTarget] = [
        t for r in config.routes for t in r.targets
    ]
    targets += [t for c in config.catalogs for t in c.targets]
    for target in targets:
        parts = urlsplit(target.base_url)
        if parts.hostname == "127.0.0.1" and parts.port and parts.port not in ports.values():
            ports.setdefault(target.name, parts.port)
    return ports
