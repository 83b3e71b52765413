"""The chart's CRD lifecycle: upgrade with a changed CRD, `crds.keep` on uninstall.

The real tiergate.dev CRDs are shared by the whole test session (other tests apply them with
kubectl), so a release must not own or delete them. These tests install a private copy of
the chart whose generated CRD templates are renamed to a unique group and kind (no short
names or categories, so `kubectl get mr` elsewhere is unaffected); everything else, the
schema included, is the chart's own. The CRDs are deleted at the end.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.chart import exists, get_json, install, release_name, uninstall
from tests.support.kube import EXAMPLES, eventually
from tiergate_devkit.cluster import ControlPlane

pytestmark = pytest.mark.cluster

KINDS = (
    ("ModelRoute", "modelroutes"),
    ("ApiKeyTier", "apikeytiers"),
    ("SpendReport", "spendreports"),
)
PLURALS = tuple(plural for _, plural in KINDS)


@dataclass(frozen=True)
class IsolatedApi:
    group: str
    prefix: str  # e.g. "x1a2b3c4": kinds become X1a2b3c4ModelRoute, plurals x1a2b3c4modelroutes

    @property
    def crds(self) -> list[str]:
        return [f"{self.prefix}{plural}.{self.group}" for plural in PLURALS]

    @property
    def routes(self) -> str:
        return f"{self.prefix}modelroutes.{self.group}"


def wait_servable(plane: ControlPlane, crd: str) -> None:
    """Established, and its storage ready: a CRD deleted while its storage still initializes
    has its cleanup requeued by the API server ("storage is (re)initializing") for up to a
    minute, which held a `helm uninstall --wait` past its timeout on a loaded machine."""
    plane.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")
    eventually(
        lambda: plane.kubectl("get", crd, "-A", check=False).returncode == 0,
        timeout=30,
        what=f"{crd} listable",
    )


def isolate_crds(chart: Path) -> IsolatedApi:
    """Rename the chart copy's CRDs to a unique group and kinds, in place."""
    tag = uuid.uuid4().hex[:8]
    api = IsolatedApi(group=f"g{tag}.chart-test.tiergate.dev", prefix=f"x{tag}")
    for kind, plural in KINDS:
        path = chart / "templates" / "crds" / f"{plural}.yaml"
        text = path.read_text()
        replacements = [
            (
                rf"(?m)^  name: {plural}\.tiergate\.dev$",
                f"  name: {api.prefix}{plural}.{api.group}",
            ),
            (r"(?m)^  group: tiergate\.dev$", f"  group: {api.group}"),
            (rf"(?m)^    kind: {kind}$", f"    kind: X{tag}{kind}"),
            (rf"(?m)^    listKind: {kind}List$", f"    listKind: X{tag}{kind}List"),
            (rf"(?m)^    plural: {plural}$", f"    plural: {api.prefix}{plural}"),
            (rf"(?m)^    singular: {plural[:-1]}$", f"    singular: {api.prefix}{plural[:-1]}"),
            (r"(?m)^    categories: \[\w+\]\n", ""),
        ]
        if kind != "SpendReport":  # the one kind without a short name
            replacements.append((r"(?m)^    shortNames: \[\w+\]\n", ""))
        for pattern, replacement in replacements:
            text, count = re.subn(pattern, replacement, text)
            assert count == 1, f"{path.name}: {pattern!r} matched {count} times; adapt isolate_crds"
        path.write_text(text)
    return api


def user_route(api: IsolatedApi, namespace: str) -> str:
    route = yaml.safe_load((EXAMPLES / "deepseek-chat.yaml").read_text())
    route["apiVersion"] = f"{api.group}/v1alpha1"
    route["kind"] = f"X{api.prefix[1:]}ModelRoute"
    route["metadata"]["namespace"] = namespace
    return yaml.safe_dump(route)


@pytest.fixture
def isolated_api(control_plane: ControlPlane, chart_copy: Path) -> Iterator[IsolatedApi]:
    api = isolate_crds(chart_copy)
    yield api
    for crd in api.crds:
        control_plane.kubectl("delete", "crd", crd, "--ignore-not-found", "--wait=false")


def printer_columns(plane: ControlPlane, crd: str) -> list[str]:
    return [
        c["name"]
        for c in get_json(plane, "crd", crd)["spec"]["versions"][0]["additionalPrinterColumns"]
    ]


def test_crd_upgrade_applies_and_keep_survives_disable_and_uninstall(
    control_plane: ControlPlane, namespace: str, chart_copy: Path, isolated_api: IsolatedApi
) -> None:
    release = release_name()
    install(control_plane, release, namespace, chart=chart_copy)
    for crd in isolated_api.crds:
        wait_servable(control_plane, crd)
        assert (
            get_json(control_plane, "crd", crd)["metadata"]["annotations"][
                "helm.sh/resource-policy"
            ]
            == "keep"
        )
    control_plane.kubectl("apply", "-f", "-", input=user_route(isolated_api, namespace))
    assert "Tier" not in printer_columns(control_plane, isolated_api.routes)

    # A new chart version whose CRD gains a printer column: `helm upgrade` must apply it.
    template = chart_copy / "templates" / "crds" / "modelroutes.yaml"
    text = template.read_text()
    assert text.count("      additionalPrinterColumns:\n") == 1
    template.write_text(
        text.replace(
            "      additionalPrinterColumns:\n",
            (
                "      additionalPrinterColumns:\n"
                "        - name: Tier\n          type: string\n"
                "          description: Added by the chart upgrade test.\n"
                "          jsonPath: .metadata.labels.tier\n"
            ),
            1,
        )
    )
    control_plane.helm(
        "upgrade",
        release,
        str(chart_copy),
        "-n",
        namespace,
        "--reuse-values",
        "--wait",
        "--timeout",
        "60s",
    )
    assert printer_columns(control_plane, isolated_api.routes)[0] == "Tier"
    listed = control_plane.kubectl("-n", namespace, "get", isolated_api.routes).stdout
    assert listed.split()[:2] == ["NAME", "TIER"], listed
    assert "deepseek-chat" in listed

    # Turning the CRDs off on upgrade drops them from the release but keeps them (keep).
    control_plane.helm(
        "upgrade",
        release,
        str(chart_copy),
        "-n",
        namespace,
        "--reuse-values",
        "--set",
        "crds.enabled=false",
        "--wait",
        "--timeout",
        "60s",
    )
    assert all(exists(control_plane, "crd", crd) for crd in isolated_api.crds)

    # ... and turning them back on adopts the kept CRDs (same release, no ownership error).
    control_plane.helm(
        "upgrade",
        release,
        str(chart_copy),
        "-n",
        namespace,
        "--reuse-values",
        "--set",
        "crds.enabled=true",
        "--wait",
        "--timeout",
        "60s",
    )
    uninstall(control_plane, release, namespace)
    assert all(exists(control_plane, "crd", crd) for crd in isolated_api.crds), (
        "crds.keep=true: uninstall must leave the CRDs"
    )
    assert exists(control_plane, "-n", namespace, isolated_api.routes, "deepseek-chat"), (
        "crds.keep=true: uninstall must leave the user's ModelRoute"
    )


def test_uninstall_without_keep_removes_the_crds_and_their_objects(
    control_plane: ControlPlane, namespace: str, chart_copy: Path, isolated_api: IsolatedApi
) -> None:
    release = release_name()
    result = install(control_plane, release, namespace, "crds.keep=false", chart=chart_copy)
    assert "WARNING: crds.keep=false" in result.stdout
    for crd in isolated_api.crds:
        wait_servable(control_plane, crd)
        assert (
            "annotations" not in get_json(control_plane, "crd", crd)["metadata"]
            or "helm.sh/resource-policy"
            not in get_json(control_plane, "crd", crd)["metadata"]["annotations"]
        )
    control_plane.kubectl("apply", "-f", "-", input=user_route(isolated_api, namespace))
    # The API server can take a minute to finish deleting a CRD whose storage it is
    # re-initializing (its finalizer requeued with backoff): room for that, not a hang.
    uninstall(control_plane, release, namespace, timeout=180)
    eventually(
        lambda: not any(exists(control_plane, "crd", crd) for crd in isolated_api.crds),
        what="crds.keep=false: uninstall deletes the release's CRDs",
        timeout=30,
    )
