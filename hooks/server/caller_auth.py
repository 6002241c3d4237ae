"""Who may call the hooks: Metacontroller, proven by a client certificate (mutual TLS).

The Machine hook creates and deletes GPU agent pools, so the hook routes must refuse any caller but
Metacontroller whatever the network allows (AKS enforces no NetworkPolicy without a policy engine).
The install creates a private CA (``python -m hooks certs``), issues the hook server's certificate and
Metacontroller's client certificate from it, and discards the CA's key: nothing else can ever be
signed by it. gunicorn verifies a presented client certificate against that CA during the handshake;
this module then requires one, with an allowed common name, on every hook route. /healthz and /metrics
stay open (kubelet probes present no certificate; they change nothing). No Kubernetes API call is
needed, and no secret crosses the wire.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

HOOK_PATH_PREFIXES = ("/sync/", "/finalize/", "/customize/")
METACONTROLLER_CLIENT_NAME = "metacontroller"


def is_hook_path(path: str) -> bool:
    return path.startswith(HOOK_PATH_PREFIXES)


def peer_certificate(environ: Mapping[str, Any]) -> dict[str, Any] | None:
    """The client certificate gunicorn verified for this connection (None: plain HTTP or none presented)."""
    getpeercert = getattr(environ.get("gunicorn.socket"), "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        return getpeercert() or None
    except (OSError, ValueError):
        return None


def common_names(certificate: Mapping[str, Any]) -> list[str]:
    """The subject's commonName values, from ssl's decoded form ((("commonName", "x"),), ...)."""
    names = []
    for rdn in certificate.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                names.append(value)
    return names


def caller_problem(certificate: Mapping[str, Any] | None, allowed: Iterable[str]) -> str | None:
    """Why this caller may not call a hook (None: it may)."""
    allowed = tuple(allowed)
    if certificate is None:
        return (
            "hook calls need Metacontroller's client certificate (mutual TLS); this connection presented "
            "none (see README: Install on AKS, `python -m hooks certs`)"
        )
    names = common_names(certificate)
    if not any(name in allowed for name in names):
        return f"client certificate {names or '(no common name)'} is not one of the allowed callers {list(allowed)}"
    return None
