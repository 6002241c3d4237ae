"""Pure helpers for registry credentials and endpoints (docker config.json lookup, challenge scheme)."""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
DOCKER_HUB_API = "registry-1.docker.io"


class CredentialError(ValueError):
    pass


def normalize_registry(key: str) -> str:
    """'https://index.docker.io/v1/' -> 'docker.io'; 'myacr.azurecr.io' stays; ports are kept."""
    host = key.strip()
    if "://" in host:
        host = urlsplit(host).netloc
    host = host.split("/", 1)[0].lower()
    return "docker.io" if host in DOCKER_HUB else host


def api_host(registry: str) -> str:
    """The host serving the /v2/ API for a registry named in an image reference."""
    return DOCKER_HUB_API if normalize_registry(registry) == "docker.io" else registry


def credentials_for(docker_config: dict, registry: str) -> tuple[str, str] | None:
    """(username, password) for `registry` from a parsed docker config.json, or None when absent."""
    wanted = normalize_registry(registry)
    for key, entry in (docker_config.get("auths") or {}).items():
        if normalize_registry(key) != wanted or not isinstance(entry, dict):
            continue
        if entry.get("username") and entry.get("password"):
            return str(entry["username"]), str(entry["password"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError) as exc:
                raise CredentialError(f"the docker config entry for {key} has an undecodable 'auth'") from exc
            if not user or not _:
                raise CredentialError(f"the docker config entry for {key} has an 'auth' that is not user:password")
            return user, password
        if entry.get("identitytoken"):
            raise CredentialError(
                f"the docker config entry for {key} holds only an identity token; use a username/password "
                "secret (kubectl create secret docker-registry ...)"
            )
    return None


def challenge_scheme(www_authenticate: str | None) -> str:
    """'basic' for a Basic challenge (htpasswd registries), else 'token' (Bearer: ACR, Docker Hub, GHCR)."""
    if www_authenticate and www_authenticate.strip().lower().startswith("basic"):
        return "basic"
    return "token"
