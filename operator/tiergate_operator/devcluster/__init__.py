"""A local, real Kubernetes control plane for tests and demos (no Docker needed)."""

from tiergate_operator.devcluster.cluster import (
    ClusterStartError,
    ControlPlane,
    kubectl_binary,
    start,
    stop,
)
from tiergate_operator.devcluster.tools import tools_bin_dir

__all__ = ["ClusterStartError", "ControlPlane", "kubectl_binary", "start", "stop", "tools_bin_dir"]
