"""``python -m tiergate_devkit.cluster start|stop|status [--workdir DIR]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tiergate_devkit.cluster.control_plane import ClusterStartError, ControlPlane, start, stop
from tiergate_devkit.cluster.tools import tools_bin_dir

DEFAULT_WORKDIR = Path(".tiergate") / "cluster"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tiergate_devkit.cluster", description=__doc__)
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args(argv)
    workdir: Path = args.workdir.resolve()

    def progress(message: str) -> None:
        print(f"[cluster] {message}", file=sys.stderr, flush=True)

    if args.command == "stop":
        stopped = stop(workdir)
        progress(f"stopped {', '.join(stopped) or 'nothing (no running cluster recorded)'}")
        return 0
    if args.command == "status":
        if not (workdir / "state.json").exists():
            progress(f"no cluster recorded in {workdir}")
            return 1
        plane = ControlPlane.load(workdir)
        print(plane.kubectl("get", "nodes,namespaces", check=False).stdout)
        return 0
    if (workdir / "state.json").exists() and ControlPlane.load(workdir).processes:
        progress(f"a cluster is already recorded in {workdir}; run stop first")
        return 1
    began = time.monotonic()
    progress("building or locating the control-plane binaries")
    bin_dir = tools_bin_dir(build=True)
    try:
        plane = start(workdir, bin_dir, progress=progress)
    except ClusterStartError as error:
        progress(str(error))
        return 1
    progress(f"control plane up in {time.monotonic() - began:.1f} s; logs in {workdir / 'logs'}")
    print(plane.kubeconfig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
