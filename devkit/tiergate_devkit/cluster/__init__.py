"""A local, real Kubernetes control plane for tests and demos (no Docker needed)."""

from tiergate_devkit.cluster.control_plane import (
    ClusterStartError,
    ControlPlane,
    start,
    stop,
)
from tiergate_devkit.cluster.tools import tools_bin_dir

__all__ = ["ClusterStartError", "ControlPlane", "start", "stop", "tools_bin_dir"]
