"""``tiergate render -f DIR``: what the operator would apply for these manifests, offline.

Prints every object (ConfigMap, Deployment, Service, PDB, HPA, gateway RBAC) or, with
``--configs-only``, each gateway's config. Problems the operator would report as
``Accepted=False`` go to stderr and make the exit code 1; the objects are printed anyway.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tiergate_cli.commands import Commands
from tiergate_cli.manifests import load_manifests
from tiergate_cli.output import dump, note
from tiergate_cli.rendering import problems, render_namespace
from tiergate_operator.settings import load_operator_settings

__all__ = ["add_parser", "run"]


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "render",
        help="print what the operator would apply for a folder of manifests (offline)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-f",
        "--filename",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder (recursive) or file of manifests; kustomization.yaml is ignored",
    )
    parser.add_argument(
        "-n", "--namespace", help="namespace for objects that set none (default: default)"
    )
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    parser.add_argument(
        "--configs-only",
        action="store_true",
        help="print only each gateway's config (the ConfigMap's config.json, decoded)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    manifests = load_manifests(args.filename, args.namespace)
    for doc in manifests.skipped:
        note(
            f"{doc.where}: skipping {doc.kind} {doc.name}: the operator does not read it", "render"
        )
    settings = load_operator_settings()
    documents: list[Any] = []
    reported: list[str] = []
    for namespace in manifests.namespaces:
        rendered = render_namespace(manifests, namespace, settings)
        reported += problems(manifests, rendered)
        if args.configs_only:
            documents += [
                config.model_dump(mode="json")
                for _, config in sorted(rendered.desired.configs.items())
            ]
        else:
            documents += rendered.desired.manifests
    print(dump(documents, args.output), end="")
    for line in reported:
        note(line, "render")
    if reported:
        note(
            f"{len(reported)} object(s) would not be served as written "
            "(left out here, or served in part; a running operator keeps their last good state)",
            "render",
        )
        return 1
    return 0
