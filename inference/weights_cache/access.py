"""Who the Hub let in: per cache entry, the namespaces whose own request for the listing the Hub answered.

A gated or private model's files on a node were fetched with one namespace's token. Another namespace may
use them only after the Hub accepted that namespace's own request (its own token, or none for a public
model) for the same commit. When the Hub cannot be reached, the cached copy serves only namespaces that
were accepted before; any other namespace is refused, since an egress policy of its own choosing is enough
to make the Hub unreachable for its pods.

Records live at `access/<org>--<name>/<commit>/<namespace>` under the cache root, outside every folder a
model container mounts: only the `model-weights` init container (our code) writes them.
"""

from __future__ import annotations

import json
import os
import re
import time

from inference.weights_cache.files import CacheError, check_commit, safe_name

# Outside a cluster (a developer's machine, the tests without --namespace): a name no namespace can have.
NO_NAMESPACE = "-"
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_namespace(namespace: str | None) -> str:
    if namespace is None or namespace == "":
        return NO_NAMESPACE
    if not _NAMESPACE.match(namespace):
        raise CacheError(f"namespace {namespace!r} is not a Kubernetes namespace name (a DNS-1123 label)")
    return namespace


def _record_path(root: str, repo: str, commit: str, namespace: str | None) -> str:
    return os.path.join(root, "access", safe_name(repo), check_commit(commit), check_namespace(namespace))


def record_access(root: str, repo: str, commit: str, namespace: str | None) -> None:
    """The Hub answered this namespace's own request for repo@commit."""
    path = _record_path(root, repo, commit, namespace)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"namespace": check_namespace(namespace), "verified_at": int(time.time())}, f)
    os.replace(tmp, path)


def was_accepted(root: str, repo: str, commit: str, namespace: str | None) -> bool:
    return os.path.isfile(_record_path(root, repo, commit, namespace))
