"""``tiergate status``: routes, tiers and gateways, from the API with the current kubeconfig.

Readiness and replicas come from the objects' status; spend from the gateways'
``/metrics`` when ``dev up`` runs them on this machine (else ``-``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import urllib.request
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

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

__all__ = ["Spend", "add_parser", "run", "spend_from_metrics"]

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
        "--dir", type=Path, default=DEFAULT_DEV_DIR, help="dev state (for local gateways' spend)"
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


class Spend:
    """USD per tier, route and gateway, summed from the gateways' cost counters."""

    def __init__(self) -> None:
        self.tiers: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        self.routes: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        self.gateways: dict[tuple[str, str], Decimal] = {}
        self.urls: dict[tuple[str, str], str] = {}


def spend_from_metrics(text: str) -> dict[tuple[str, str], Decimal]:
    """``{(tier, route): USD}`` from a gateway's Prometheus exposition."""
    found: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tiergate_gateway_cost_usd_total":
                found[(sample.labels["tier"], sample.labels["route"])] += Decimal(
                    repr(sample.value)
                )
    return found


def _local_spend(dev_dir: Path) -> Spend | None:
    state = DevState.load(dev_dir.resolve())
    if state is None:
        return None
    spend = Spend()
    for gateway, port in state.gateways.items():
        spend.urls[(state.namespace, gateway)] = f"http://127.0.0.1:{port}/v1"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            continue
        total = Decimal(0)
        for (tier, route), usd in spend_from_metrics(text).items():
            spend.tiers[(state.namespace, tier)] += usd
            spend.routes[(state.namespace, route)] += usd
            total += usd
        spend.gateways[(state.namespace, gateway)] = total
    return spend


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


def _usd(amount: Decimal | None) -> str:
    if amount is None:
        return "-"
    return f"${amount:,.2f}" if amount >= Decimal("0.01") or amount == 0 else f"${amount:.6f}"


def _ref(body: Body) -> tuple[str, str]:
    return body["metadata"]["namespace"], body["metadata"]["name"]


def run(args: argparse.Namespace) -> int:
    keys = _keys(args)
    objects = _kubectl_json(args, resources(MODEL_ROUTE, API_KEY_TIER))
    children = _kubectl_json(args, resources(DEPLOYMENT, CONFIG_MAP), "-l", _GATEWAY_CHILDREN)
    spend = _local_spend(Path(args.dir))

    def spent(bucket: str, key: tuple[str, str]) -> str:
        return "-" if spend is None else _usd(getattr(spend, bucket).get(key, Decimal(0)))

    routes = [
        [
            *_ref(b),
            b["spec"].get("model") or f"catalog: {(b.get('status') or {}).get('catalog', '-')}",
            *_ready(b),
            ",".join((b.get("status") or {}).get("gateways") or []) or "-",
            spent("routes", _ref(b)),
        ]
        for b in objects
        if b["kind"] == MODEL_ROUTE.kind
    ]
    tiers = []
    for b in (b for b in objects if b["kind"] == API_KEY_TIER.kind):
        status = b.get("status") or {}
        budget = (b["spec"].get("budget") or {}).get("monthlyUSD")
        tiers.append(
            [
                *_ref(b),
                b["spec"].get("isolation", ""),
                *_ready(b),
                status.get("gateway") or "-",
                f"{status.get('readyReplicas', 0)}/{status.get('replicas', 0)}",
                spent("tiers", _ref(b)) + (f" / ${Decimal(budget):,.2f}" if budget else ""),
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
                "-" if spend is None else _usd(spend.gateways.get(_ref(d))),
                spend.urls.get(_ref(d), "-") if spend else "-",
            ]
        )
    print(
        "ModelRoutes\n"
        + table(["NAMESPACE", "NAME", "MODEL", "READY", "REASON", "GATEWAYS", "SPEND"], routes)
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
                "SPEND (since gateway start) / BUDGET",
            ],
            tiers,
        )
    )
    print(
        "Gateways\n"
        + table(
            ["NAMESPACE", "NAME", "ISOLATION", "READY", "CONFIG", "SPEND", "LOCAL URL (dev up)"],
            gateways,
        ),
        end="",
    )
    return 0
