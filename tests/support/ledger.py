"""The CRDs a gateway reading its config from the API needs: the tiergate kinds and
SpendReport (the spend ledger, ``docs/ledger.md``)."""

from __future__ import annotations

from tests.support.kube import CRDS, apply_crds
from tiergate_devkit.cluster import ControlPlane

__all__ = ["apply_ledger_crds"]


def apply_ledger_crds(plane: ControlPlane) -> None:
    apply_crds(plane)
    plane.kubectl("apply", "--server-side", "-f", str(CRDS / "spendreports.yaml"))
    plane.kubectl(
        "wait", "--for=condition=Established", "crd/spendreports.tiergate.dev", "--timeout=30s"
    )
