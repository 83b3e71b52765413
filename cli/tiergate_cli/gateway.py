"""``tiergate gateway -f DIR``: the real gateway, locally, from the same manifests; no cluster.

The config is rendered by the operator's pipeline (as ``render``) for one gateway and
handed to the gateway as a hot-reloaded file. Client keys and upstream credentials come
from the Secrets in DIR (``stringData`` or ``data``) and from ``--keys-dir``
(``<dir>/<secret>/<key>`` files, for repositories that keep no Secrets); upstream
credentials are written to a private temporary folder removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

import tiergate_contract as contract
from tiergate_cli import mock_upstream
from tiergate_cli.commands import Commands
from tiergate_cli.credentials import credential_refs, read_keys_dir, write_credentials
from tiergate_cli.manifests import ManifestSet, load_manifests
from tiergate_cli.output import CommandError, note
from tiergate_cli.rendering import problems, render_namespace
from tiergate_cli.targets import local_upstream_ports, override_upstreams, parse_overrides
from tiergate_gateway.__main__ import serve
from tiergate_gateway.settings import Settings
from tiergate_operator.names import SHARED_GATEWAY
from tiergate_operator.settings import load_operator_settings

__all__ = ["add_parser", "gateway_config", "run"]


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "gateway",
        help="run the real gateway locally from a folder of manifests (no cluster)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-f", "--filename", type=Path, required=True, metavar="DIR")
    parser.add_argument("-n", "--namespace", help="namespace for objects that set none")
    parser.add_argument(
        "--gateway",
        default=SHARED_GATEWAY,
        help=f"which gateway to run: {SHARED_GATEWAY} or tiergate-<dedicated tier>",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--keys-dir",
        type=Path,
        metavar="DIR",
        help="Secret values as <DIR>/<secret>/<key> files (client keys, upstream credentials)",
    )
    parser.add_argument(
        "--upstream-override",
        action="append",
        default=[],
        metavar="TARGET=URL",
        help="send a target (name, or route/name; * for all) to another base URL",
    )
    parser.add_argument(
        "--mock-upstreams",
        action="store_true",
        help="also serve mock OpenAI upstreams on the 127.0.0.1 ports the targets use",
    )
    parser.add_argument("--log-level", default="WARNING")
    parser.set_defaults(run=run)


def _namespace(manifests: ManifestSet, wanted: str | None) -> str:
    namespaces = manifests.namespaces
    if wanted:
        return wanted
    if len(namespaces) > 1:
        raise CommandError(
            f"the manifests span namespaces {', '.join(namespaces)}: pick one with -n"
        )
    return namespaces[0]


def gateway_config(
    manifests: ManifestSet, namespace: str, gateway: str, secrets: dict[str, dict[str, str]]
) -> contract.GatewayConfig:
    """The config the operator would give ``gateway``; problems are printed, not fatal."""
    rendered = render_namespace(manifests, namespace, load_operator_settings(), secrets)
    for line in problems(manifests, rendered):
        note(line, "gateway")
    configs = rendered.desired.configs
    if gateway not in configs:
        known = ", ".join(sorted(configs)) or "none (no ApiKeyTier could be served)"
        raise CommandError(f"no gateway {gateway!r} in namespace {namespace}; gateways: {known}")
    return configs[gateway]


def run(args: argparse.Namespace) -> int:
    manifests = load_manifests(args.filename, args.namespace)
    namespace = _namespace(manifests, args.namespace)
    secrets = manifests.secret_values(namespace) | (
        read_keys_dir(args.keys_dir) if args.keys_dir else {}
    )
    config = gateway_config(manifests, namespace, args.gateway, secrets)
    config = override_upstreams(config, parse_overrides(args.upstream_override))
    upstreams = (
        mock_upstream.start_in_thread(local_upstream_ports(config)) if args.mock_upstreams else None
    )
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with tempfile.TemporaryDirectory(prefix="tiergate-gateway-") as private:
        folder = Path(private)
        config_file = folder / "config.json"
        config_file.write_bytes(contract.canonical_json(config))
        for ref in write_credentials(folder / "credentials", credential_refs(config), secrets):
            note(
                f"no value for Secret {ref.secret} key {ref.key}: targets using it will fail",
                "gateway",
            )
        settings = Settings(
            host=args.host,
            port=args.port,
            config_file=config_file,
            credentials_dir=folder / "credentials",
            log_level=args.log_level.upper(),
        )

        def ready(port: int) -> None:
            tiers = ", ".join(tier.name for tier in config.tiers) or "none"
            models = ", ".join(route.model for route in config.routes) or "none"
            for catalog in config.catalogs:
                models += f"; catalog {catalog.name} ({len(catalog.models)} models)"
            note(f"{args.gateway} ({namespace}) serves tiers {tiers}; models {models}", "gateway")
            if upstreams is not None:
                note(
                    f"mock upstreams on {', '.join(f'{n}:{p}' for n, p in upstreams.ports.items())}",
                    "gateway",
                )
            note(
                f"OpenAI base URL: http://{args.host}:{port}/v1  (client keys: the values of the "
                "tiers' key Secrets); Ctrl-C stops",
                "gateway",
            )

        try:
            asyncio.run(serve(settings, on_ready=ready))
        except OSError as error:
            raise CommandError(
                f"cannot serve on {args.host}:{args.port}: {error.strerror or error}"
            ) from None
        finally:
            if upstreams is not None:
                upstreams.stop()
    return 0
