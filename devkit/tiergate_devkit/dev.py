"""``tiergate dev up`` / ``dev down``: the whole system on this machine, and its removal.

``up``: a local control plane (etcd, kube-apiserver, controller-manager, scheduler,
kwok), the CRDs, the operator, the example manifests in namespace ``demo``, mock
upstreams on the ports the examples' targets use, and one real gateway process per
gateway, fed from the API; then prints how to call it. State, logs and ports live in
``.tiergate/dev/``. ``down`` stops exactly what ``up`` started, by PID.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tiergate_cli.commands import Commands
from tiergate_cli.devstate import DEFAULT_DEV_DIR, DevState
from tiergate_cli.manifests import ManifestSet, load_manifests
from tiergate_cli.output import CommandError, note
from tiergate_cli.rendering import problems, render_namespace
from tiergate_cli.targets import local_upstream_ports
from tiergate_devkit.checkout import crds_dir, examples_dir
from tiergate_devkit.cluster import ClusterStartError, stop
from tiergate_devkit.devup import DevUp
from tiergate_devkit.processes import is_running, stop_process
from tiergate_operator.desired import DesiredState
from tiergate_operator.names import SHARED_GATEWAY, gateway_for_tier
from tiergate_operator.registry import API_KEY_TIER, CONFIG_MAP, DEPLOYMENT, MODEL_ROUTE
from tiergate_operator.settings import load_operator_settings

__all__ = ["add_parser", "down", "instructions", "up"]

Progress = Callable[[str], None]


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "dev",
        help="run everything locally: control plane, operator, gateways",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(title="actions", required=True, metavar="ACTION")
    up_parser = actions.add_parser("up", help="start it all and print how to call the gateways")
    up_parser.add_argument(
        "-f",
        "--filename",
        type=Path,
        default=None,
        metavar="DIR",
        help="manifests to apply (default: the checkout's crds/examples)",
    )
    up_parser.add_argument("-n", "--namespace", default="demo")
    up_parser.add_argument(
        "--crds", type=Path, default=None, metavar="DIR", help="default: the checkout's crds/"
    )
    up_parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DEV_DIR, help="state, logs and credentials"
    )
    up_parser.set_defaults(run=_run_up)
    down_parser = actions.add_parser("down", help="stop what `dev up` started")
    down_parser.add_argument("--dir", type=Path, default=DEFAULT_DEV_DIR)
    down_parser.set_defaults(run=_run_down)


def _timed(prefix: str) -> Progress:
    began = time.monotonic()
    return lambda message: note(f"{time.monotonic() - began:5.1f}s {message}", prefix)


def up(
    manifests: ManifestSet,
    root: Path,
    namespace: str,
    progress: Progress,
    crds: Path | None = None,
) -> DevState:
    """Bring everything up; on failure, stop what was started and raise CommandError."""
    root = root.resolve()
    previous = DevState.load(root)
    if previous is not None and (
        previous.cluster_started or any(map(is_running, previous.processes))
    ):
        raise CommandError(f"already up (state in {root}); run `tiergate dev down` first")
    settings = load_operator_settings()
    rendered = render_namespace(manifests, namespace, settings)
    for line in problems(manifests, rendered):
        progress(f"warning: {line}")
    if not rendered.desired.configs:
        raise CommandError("the manifests define no gateway (no ApiKeyTier could be served)")
    _check_ports_free(rendered.desired)
    state = DevState(root=root, namespace=namespace)
    state.save()
    steps = DevUp(state, manifests, rendered.desired, settings, progress, crds or crds_dir())
    try:
        plane = steps.control_plane()
        steps.install_crds(plane)
        steps.mock_upstreams()
        steps.operator(plane)
        steps.apply_manifests(plane)
        steps.wait_ready(plane)
        steps.gateways(plane)
    except (ClusterStartError, RuntimeError, OSError) as error:
        progress("failed: stopping what was started")
        down(root, progress)
        raise CommandError(f"dev up failed: {error}") from None
    except KeyboardInterrupt:
        progress("interrupted: stopping what was started")
        down(root, progress)
        raise
    progress("up")
    return state


def _check_ports_free(desired: DesiredState) -> None:
    """The mock upstreams need the ports the targets name: fail before starting anything."""
    for config in desired.configs.values():
        for name, port in local_upstream_ports(config).items():
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the mocks do
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    raise CommandError(
                        f"127.0.0.1:{port} (target {name}'s upstream) is in use: another "
                        "`tiergate dev up` or `gateway --mock-upstreams`? Stop it first"
                    ) from None


def down(root: Path, progress: Progress) -> bool:
    """Stop the recorded processes (newest first) and the control plane; False if nothing was up."""
    state = DevState.load(root.resolve())
    if state is None:
        return False
    for record in reversed(state.processes):
        if stop_process(record):
            progress(f"stopped {record.name} (pid {record.pid})")
    if state.cluster_started:
        stopped = stop(state.cluster_dir)
        progress(f"stopped the control plane ({', '.join(stopped) or 'nothing was running'})")
    shutil.rmtree(state.credentials, ignore_errors=True)
    (state.root / "gateway.kubeconfig").unlink(missing_ok=True)
    state.path.unlink()
    progress(f"down; logs kept in {state.logs}")
    return True


def _client_key(manifests: ManifestSet, state: DevState, gateway: str) -> tuple[str, str] | None:
    """(tier, one of its keys) for a gateway, from the example Secrets: fake values, fine to show."""
    secrets = manifests.secret_values(state.namespace)
    for doc in manifests.of_kind(API_KEY_TIER.kind, state.namespace):
        spec = doc.body.get("spec", {})
        if gateway_for_tier(doc.name, spec.get("isolation", "Shared")) != gateway:
            continue
        for source in spec.get("keys", []):
            values = secrets.get(source.get("secretRef", {}).get("name", ""), {})
            if values:
                return doc.name, values[sorted(values)[0]]
    return None


def instructions(manifests: ManifestSet, state: DevState) -> str:
    lines = ["", "tiergate is up. Gateways (OpenAI-compatible, on this machine only):"]
    snippet_url, snippet_key = "", ""
    for gateway, port in sorted(state.gateways.items()):
        found = _client_key(manifests, state, gateway)
        tier, key = found if found else ("?", "?")
        lines.append(
            f"  {gateway:<26} base_url http://127.0.0.1:{port}/v1   tier {tier}, key {key}"
        )
        if gateway == SHARED_GATEWAY or not snippet_url:
            snippet_url, snippet_key = f"http://127.0.0.1:{port}/v1", key
    models = sorted(
        {
            doc.body.get("spec", {}).get("model", doc.name)
            for doc in manifests.of_kind(MODEL_ROUTE.kind, state.namespace)
        }
    )
    kinds = ",".join(kind.plural for kind in (MODEL_ROUTE, API_KEY_TIER, DEPLOYMENT, CONFIG_MAP))
    lines += [
        "",
        "Call it with the openai SDK:",
        "  from openai import OpenAI",
        f'  client = OpenAI(base_url="{snippet_url}", api_key="{snippet_key}")',
        f'  print(client.chat.completions.create(model="{models[0] if models else "?"}",',
        '        messages=[{"role": "user", "content": "hello"}]).choices[0].message.content)',
        "",
        "Look around:",
        f"  export KUBECONFIG={state.kubeconfig}",
        f"  kubectl get {kinds} -n {state.namespace}",
        "  tiergate status",
        f"  mock upstreams: {', '.join(f'{n} :{p}' for n, p in sorted(state.upstreams.items()))}"
        ' (POST /admin/fail {"status": 503, "seconds": 10} to make one fail)',
        f"  logs: {state.logs}",
        "",
        "Stop it all: tiergate dev down",
        "",
    ]
    return "\n".join(lines)


def _run_up(args: argparse.Namespace) -> int:
    manifests = load_manifests(args.filename or examples_dir(), args.namespace)
    state = up(manifests, args.dir, args.namespace, _timed("dev"), args.crds)
    print(instructions(manifests, state))
    return 0


def _run_down(args: argparse.Namespace) -> int:
    if not down(args.dir, _timed("dev")):
        note(f"nothing recorded in {args.dir.resolve()}: nothing to stop", "dev")
    return 0
