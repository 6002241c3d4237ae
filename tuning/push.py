"""`python -m tuning.push`: push the trained adapter as an OCI image usable as an inference adapter source.

Image layout (tuning.image): one gzip layer with data/adapter_config.json + data/adapter_model.safetensors,
an OCI image config with rootfs.diff_ids, and the manifest annotation sh.kaito.model.name=<preset>.
Registry traffic goes through the `oras` library (blob upload, manifest PUT, Basic or Bearer-token auth);
credentials come from a docker config.json and are never logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile

from tuning.image import build_adapter_image
from tuning.registry_auth import CredentialError, api_host, challenge_scheme, credentials_for

log = logging.getLogger("tuning.push")
MARKER = "fine_tuning_completed.txt"


class PushError(RuntimeError):
    pass


def _scoped_token_auth():
    """oras' TokenAuth, but it fetches a new token when a challenge asks for a different scope.

    Stock TokenAuth keeps the first token (e.g. `pull` from the blob HEAD) and retries the upload POST,
    which needs `pull,push`, with it: distribution, ACR and Docker Hub all answer 401 insufficient_scope.
    """
    import oras.auth.utils
    from oras.auth.token import TokenAuth

    class ScopedTokenAuth(TokenAuth):
        def authenticate_request(self, original, headers, refresh=False):
            scope = oras.auth.utils.parse_auth_header(original.headers.get("Www-Authenticate") or "").scope
            if scope and scope != getattr(self, "_scope", None):
                self._scope = scope
                refresh = True
            return super().authenticate_request(original, headers, refresh=refresh)

    return ScopedTokenAuth()


def _registry_client(registry: str, plain_http: bool, credentials: tuple[str, str] | None):
    import oras.provider
    import requests

    scheme = "http" if plain_http else "https"
    # Which auth the registry wants decides the oras backend: Basic (htpasswd) or Bearer-token challenges.
    try:
        probe = requests.get(f"{scheme}://{registry}/v2/", timeout=30)
    except requests.RequestException as exc:
        raise PushError(f"registry {registry} is not reachable over {scheme}: {exc}") from exc
    backend = challenge_scheme(probe.headers.get("Www-Authenticate")) if probe.status_code == 401 else "token"
    client = oras.provider.Registry(hostname=registry, insecure=plain_http, auth_backend=backend)
    if backend == "token":
        auth = _scoped_token_auth()
        auth.session, auth.prefix, auth._tls_verify = client.session, client.prefix, client._tls_verify
        client.auth = auth
    if credentials:
        client.auth.set_basic_auth(*credentials)
    elif backend == "basic":
        raise PushError(f"registry {registry} requires a login and the docker config has no entry for it")
    return client


def _check(response, what: str) -> None:
    if response.status_code not in (200, 201, 202):
        detail = ""
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(str(e.get("message", e)) for e in errors)
        except ValueError:
            pass
        raise PushError(f"{what} failed: HTTP {response.status_code} {response.reason} {detail}".strip())


def push(
    source: str,
    image: str,
    docker_config: str | None = None,
    plain_http: bool = False,
    preset: str | None = None,
    require_marker: bool = True,
) -> str:
    """Push the adapter in `source` to `image`; returns the manifest digest the registry reported."""
    import oras.container

    if require_marker and not os.path.isfile(os.path.join(source, MARKER)):
        raise PushError(f"{source} has no {MARKER}: training did not complete")
    layer, config, manifest = build_adapter_image(source, preset)

    container = oras.container.Container(image)
    container.registry = api_host(container.registry)
    if container.registry == "registry-1.docker.io" and not container.namespace:
        container.namespace = "library"
    credentials = None
    if docker_config:
        try:
            with open(docker_config, encoding="utf-8") as f:
                credentials = credentials_for(json.load(f), container.registry)
        except (OSError, ValueError) as exc:
            raise PushError(f"cannot use docker config {docker_config}: {exc}") from exc
    client = _registry_client(container.registry, plain_http, credentials)

    with tempfile.TemporaryDirectory(prefix="adapter-push-") as tmp:
        for name, blob in (("layer", layer), ("config", config)):
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(blob.data)
            _check(client.upload_blob(path, container, blob.descriptor()), f"uploading the {name} blob")
    response = client.upload_manifest(manifest, container)
    _check(response, "uploading the manifest")
    digest = response.headers.get("Docker-Content-Digest", "")
    log.info("pushed %s (layer %s, %d bytes) manifest %s", container.uri, layer.digest, len(layer.data), digest)
    return digest


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stdout)
    p = argparse.ArgumentParser(prog="python -m tuning.push", description=__doc__)
    p.add_argument("--source", required=True, help="directory with adapter_config.json and adapter_model.safetensors")
    p.add_argument("--image", required=True, help="target reference, e.g. myacr.azurecr.io/adapters/phi3:0.0.1")
    p.add_argument("--docker-config", help="docker config.json with the registry credentials")
    p.add_argument("--plain-http", action="store_true", help="talk to the registry over plain HTTP (local registries)")
    p.add_argument("--preset", help="base model preset name, recorded as annotation sh.kaito.model.name")
    p.add_argument("--skip-marker-check", action="store_true", help=f"push even without {MARKER}")
    args = p.parse_args(argv)
    try:
        push(args.source, args.image, args.docker_config, args.plain_http, args.preset, not args.skip_marker_check)
    except (PushError, CredentialError, FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
