"""``tiergate status``: routes, tiers and gateways, from the API with the current kubeconfig.

Readiness and replicas come from the objects' status; money from each tier's
``status.spend``, which the operator keeps within 30 s of the calls from the durable
ledger (docs/ledger.md): never from a gateway's metrics, which die with its process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

from tiergate_cli.commands import Commands
from tiergate_cli.devstate import DEFAULT_DEV_DIR, DevState
from tiergate_cli.kubectl import kubectl_binary
from tiergate_cli.output import CommandError, table
from tiergate_operator.registry import (
    API_KEY_TIER,
    COMPONENT_LABEL,
    CONFIG_MAP,
    DEFAULT_PREFIX,
    DEPLOYMENT,
    GATEWAY_COMPONENT,
    MANAGED_BY,
    MODEL_ROUTE,
    PrefixedKeys,
    label_selector,
    resources,
)
from tiergate_operator.settings import prefix_from_env

__all__ = ["add_parser", "run", "tier_money"]

Body = dict[str, Any]
_GATEWAY_CHILDREN = label_selector({**MANAGED_BY, COMPONENT_LABEL: GATEWAY_COMPONENT})


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "status", help="routes, tiers and gateways: readiness, replicas, spend", description=__doc__
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="one namespace (default: all)")
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="every namespace (the default)"
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="default: $KUBECONFIG, else the one `tiergate dev up` made, else ~/.kube/config",
    )
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DEV_DIR, help="dev state (for local gateways' URLs)"
    )
    parser.add_argument(
        "--prefix",
        type=_prefixed_keys,
        default=None,
        dest="keys",
        help="the prefix of the labels and annotations the operator writes (its TIERGATE_PREFIX); "
        f"default: $TIERGATE_PREFIX, else {DEFAULT_PREFIX}",
    )
    parser.set_defaults(run=run)


def _prefixed_keys(prefix: str) -> PrefixedKeys:
    try:
        return PrefixedKeys(prefix)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _keys(args: argparse.Namespace) -> PrefixedKeys:
    if args.keys is not None:
        keys: PrefixedKeys = args.keys
        return keys
    try:
        return PrefixedKeys(prefix_from_env())
    except ValueError as error:
        raise CommandError(f"TIERGATE_PREFIX: {error}") from None


def tier_money(body: Body) -> tuple[str, str, str]:
    """(month spend / budget, credits left, when the figures last changed) of a tier, from
    its ``status.spend`` (``-`` where the operator has not written it, or no budget/credits)."""
    spend = (body.get("status") or {}).get("spend") or {}
    budget = (body.get("spec", {}).get("budget") or {}).get("monthlyUSD")
    month = _usd(Decimal(spend["monthUSD"])) if "monthUSD" in spend else "-"
    left = spend.get("creditsRemainingUSD")
    return (
        month + (f" / {_usd(Decimal(budget))}" if budget else ""),
        _usd(Decimal(left)) if left is not None else "-",
        str(spend.get("updatedAt", "-")),
    )


def _local_urls(dev_dir: Path) -> dict[tuple[str, str], str]:
    state = DevState.load(dev_dir.resolve())
    if state is None:
        return {}
    return {
        (state.namespace, gateway): f"http://127.0.0.1:{port}/v1"
        for gateway, port in state.gateways.items()
    }


def _kubeconfig(args: argparse.Namespace) -> Path | None:
    if args.kubeconfig:
        return Path(args.kubeconfig)
    if os.environ.get("KUBECONFIG"):
        return None  # kubectl reads it
    state = DevState.load(Path(args.dir).resolve())
    return state.kubeconfig if state is not None else None


def _kubectl_json(args: argparse.Namespace, *argv: str) -> list[Body]:
    kubeconfig = _kubeconfig(args)
    scope = ["-n", args.namespace] if args.namespace else ["-A"]
    command = [
        kubectl_binary(),
        *(["--kubeconfig", str(kubeconfig)] if kubeconfig else []),
        "get",
        *argv,
        *scope,
        "-o",
        "json",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise CommandError(f"kubectl get {' '.join(argv)}: {result.stderr.strip()}")
    items: list[Body] = json.loads(result.stdout)["items"]
    return items


def _ready(body: Body) -> tuple[str, str]:
    conditions = (body.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is None:
        return "Unknown", "-"
    return str(ready.get("status")), str(ready.get("reason", "-"))


def _usd(amount: Decimal) -> str:
    sign, amount = ("-" if amount < 0 else ""), abs(amount)
    text = f"${amount:,.2f}" if amount >= Decimal("0.01") or amount == 0 else f"${amount:.6f}"
    return sign + text


def _ref(body: Body) -> tuple[str, str]:
    return body["metadata"]["namespace"], body["metadata"]["name"]


def run(args: argparse.Namespace) -> int:
    keys = _keys(args)
    objects = _kubectl_json(args, resources(MODEL_ROUTE, API_KEY_TIER))
    children = _kubectl_json(args, resources(DEPLOYMENT, CONFIG_MAP), "-l", _GATEWAY_CHILDREN)
    urls = _local_urls(Path(args.dir))

    routes = [
        [
            *_ref(b),
            b["spec"].get("model") or f"catalog: {(b.get('status') or {}).get('catalog', '-')}",
            *_ready(b),
            ",".join((b.get("status") or {}).get("gateways") or []) or "-",
        ]
        for b in objects
        if b["kind"] == MODEL_ROUTE.kind
    ]
    tiers = []
    for b in (b for b in objects if b["kind"] == API_KEY_TIER.kind):
        status = b.get("status") or {}
        tiers.append(
            [
                *_ref(b),
                b["spec"].get("isolation", ""),
                *_ready(b),
                status.get("gateway") or "-",
                f"{status.get('readyReplicas', 0)}/{status.get('replicas', 0)}",
                *tier_money(b),
            ]
        )
    generations = {
        _ref(c): (c["metadata"].get("annotations") or {}).get(
            keys.config_generation_annotation, "-"
        )
        for c in children
        if c["kind"] == CONFIG_MAP.kind
    }
    gateways = []
    for d in (c for c in children if c["kind"] == DEPLOYMENT.kind):
        status = d.get("status") or {}
        isolation = (d["metadata"].get("labels") or {}).get(keys.isolation_label, "-")
        gateways.append(
            [
                *_ref(d),
                isolation,
                f"{status.get('readyReplicas', 0)}/{d['spec'].get('replicas', 0)}",
                generations.get(_ref(d), "-"),
                urls.get(_ref(d), "-"),
            ]
        )
    print(
        "ModelRoutes\n"
        + table(["NAMESPACE", "NAME", "MODEL", "READY", "REASON", "GATEWAYS"], routes)
    )
    print(
        "ApiKeyTiers\n"
        + table(
            [
                "NAMESPACE",
                "NAME",
                "ISOLATION",
                "READY",
                "REASON",
                "GATEWAY",
                "REPLICAS",
                "MONTH SPEND / BUDGET",
                "CREDITS LEFT",
                "UPDATED",
            ],
            tiers,
        )
    )
    print(
        "Gateways\n"
        + table(
            ["NAMESPACE", "NAME", "ISOLATION", "READY", "CONFIG", "LOCAL URL (dev up)"],
            gateways,
        ),
        end="",
    )
    return 0
