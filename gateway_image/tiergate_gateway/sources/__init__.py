"""Where configs come from: a file (hot reloaded) or one ConfigMap watched through the Kubernetes API.

``file``: the polled file. ``kubeconfig``: how to reach and authenticate to the API
server. ``configmap_watch``: list, then watch one ConfigMap, resuming after breaks.
``event_lines``: the watch stream cut into events.
"""

from .configmap_watch import KubeSource, Offer
from .file import FileSource
from .kubeconfig import KubeAccess, kube_access

__all__ = ["FileSource", "KubeAccess", "KubeSource", "Offer", "kube_access"]
