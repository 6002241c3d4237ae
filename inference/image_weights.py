"""`python -m inference.image_weights --image REF --cache DIR --link PATH`: presetOptions.image weights for
clusters without image volumes, into the node-local weights cache, on disk once.

Copying /data out of the image after the kubelet pulled it would keep the weights on the node twice
(the image's layers and the copy: 2 x 131 GiB does not fit a 70B preset's disk). Instead this init
container asks the registry for the image itself (the OCI distribution API: manifest, then each layer
blob, with Bearer or Basic auth from the pod's pull secrets) and streams every layer through gunzip
and tar, keeping only the files under data/, so nothing but the weights lands on disk. Each layer's
sha256 is checked as it streams. The entry is keyed by the manifest digest, shared by the node's pods,
locked and marked complete like the HuggingFace entries (inference/weights_cache/), in the folder
`models/image--<hash of the reference>` the model container mounts read-only; an interrupted
pull starts that image again (layers are not resumable mid-stream). `--link` makes PATH a symlink to
the entry's files, so the launcher's --weights-dir stays fixed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlencode

from inference.weights_cache.cache import CacheError, Entry, WeightsCache

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])  # fmt: skip
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
DATA_PREFIX = "data/"


class ImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class ImageRef:
    registry: str  # host[:port] serving /v2/
    repository: str
    reference: str  # tag or digest


def cache_repo(image: str) -> str:
    """`<org>/<name>` for the cache layout: a hash of the reference as the Workspace writes it, so the hook
    can name the same folder for the model container's read-only mount without parsing the reference."""
    return "image/" + hashlib.sha256(image.encode()).hexdigest()[:32]


def parse_ref(ref: str) -> ImageRef:
    name, digest = ref.split("@", 1) if "@" in ref else (ref, "")
    last = name.rsplit("/", 1)[-1]
    tag = ""
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = "registry-1.docker.io", name if rest else f"library/{name}"
    if registry in ("docker.io", "index.docker.io"):
        registry = "registry-1.docker.io"
    if not repository:
        raise ImageError(f"image {ref!r} names no repository")
    return ImageRef(registry, repository, digest or tag or "latest")


def credentials(docker_configs: list[str], registry: str) -> tuple[str, str] | None:
    """(user, password) for the registry from the pull secrets' config.json files (their `auths`)."""
    wanted = {registry, "docker.io", "index.docker.io"} if registry == "registry-1.docker.io" else {registry}
    for path in docker_configs:
        with open(path, encoding="utf-8") as f:
            auths = (json.load(f) or {}).get("auths") or {}
        for key, entry in auths.items():
            host = re.sub(r"^https?://", "", key).split("/", 1)[0]
            if host not in wanted or not isinstance(entry, dict):
                continue
            if entry.get("username") and entry.get("password"):
                return entry["username"], entry["password"]
            if entry.get("auth"):
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                return user, password
    return None


class Registry:
    """The few calls of the OCI distribution API a pull needs (stdlib HTTP)."""

    def __init__(self, ref: ImageRef, creds: tuple[str, str] | None, plain_http: bool = False):
        self.ref, self.creds = ref, creds
        self.base = f"{'http' if plain_http else 'https'}://{ref.registry}/v2/{ref.repository}"
        self.auth: str | None = None

    def _open(self, url: str, accept: str | None = None):
        for attempt in range(2):
            req = urllib.request.Request(url)
            if accept:
                req.add_header("Accept", accept)
            if self.auth:
                req.add_unredirected_header("Authorization", self.auth)  # never sent on to a blob store redirect
            try:
                return urllib.request.urlopen(req, timeout=60)
            except urllib.error.HTTPError as e:
                if e.code != 401 or attempt:
                    raise ImageError(f"{url}: HTTP {e.code} {e.reason}") from None
                self.auth = self._authenticate(e.headers.get("WWW-Authenticate") or "")
        raise ImageError(f"{url}: not authorized with the pull secrets given")

    def _authenticate(self, challenge: str) -> str:
        basic = "Basic " + base64.b64encode(":".join(self.creds).encode()).decode() if self.creds else None
        if challenge.lower().startswith("basic"):
            if not basic:
                raise ImageError(f"{self.ref.registry} asks for credentials: add the pull secret to imagePullSecrets")
            return basic
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if "realm" not in params:
            raise ImageError(f"{self.ref.registry}: unsupported auth challenge {challenge!r}")
        query = {k: params[k] for k in ("service", "scope") if k in params}
        query.setdefault("scope", f"repository:{self.ref.repository}:pull")
        req = urllib.request.Request(f"{params['realm']}?{urlencode(query)}")
        if basic:
            req.add_header("Authorization", basic)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                doc = json.load(r)
        except urllib.error.HTTPError as e:
            raise ImageError(f"token service of {self.ref.registry}: HTTP {e.code} {e.reason}") from None
        return "Bearer " + (doc.get("token") or doc.get("access_token") or "")

    def manifest(self) -> tuple[str, dict]:
        """(digest, image manifest) for linux/amd64 (or the only image of an index)."""
        with self._open(f"{self.base}/manifests/{self.ref.reference}", MANIFEST_TYPES) as r:
            body = r.read()
            digest = r.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
        doc = json.loads(body)
        if doc.get("mediaType") in INDEX_TYPES or "manifests" in doc:
            chosen = next(
                (m for m in doc["manifests"] if (m.get("platform") or {}).get("os") == "linux"
                 and (m.get("platform") or {}).get("architecture") == "amd64"),
                doc["manifests"][0] if len(doc["manifests"]) == 1 else None,
            )  # fmt: skip
            if chosen is None:
                raise ImageError(f"{self.ref.repository}: no linux/amd64 image in the index")
            with self._open(f"{self.base}/manifests/{chosen['digest']}", MANIFEST_TYPES) as r:
                doc = json.loads(r.read())
            digest = chosen["digest"]
        return digest, doc

    def blob(self, digest: str):
        return self._open(f"{self.base}/blobs/{digest}")


class _Hashing:
    """A read-only stream that hashes what passes through."""

    def __init__(self, raw):
        self.raw, self.sha = raw, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        chunk = self.raw.read(n)
        self.sha.update(chunk)
        return chunk


def _inside(root: str, name: str) -> str | None:
    path = os.path.normpath(os.path.join(root, name))
    return path if path.startswith(root + os.sep) else None


def extract_data(stream, root: str) -> None:
    """Extract the regular files under data/ of one layer tar stream into root (whiteouts applied)."""
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            name = member.name.lstrip("./")
            if not name.startswith(DATA_PREFIX):
                continue
            rel = name[len(DATA_PREFIX) :]
            base = os.path.basename(rel)
            if base.startswith(".wh."):  # a later layer deleted a file of an earlier one
                target = _inside(root, os.path.join(os.path.dirname(rel), base[4:]))
                if target and os.path.isdir(target):
                    shutil.rmtree(target)
                elif target and os.path.exists(target):
                    os.remove(target)
                continue
            path = _inside(root, rel)
            if path is None or not (member.isfile() or member.isdir()):
                continue  # links and devices are not weights
            if member.isdir():
                os.makedirs(path, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            src = tar.extractfile(member)
            if src is None:
                continue
            with open(path, "wb") as out:
                shutil.copyfileobj(src, out, 8 << 20)
    while stream.read(1 << 20):  # the rest (tar padding) counts for the digest
        pass


def fetch_image(image: str, cache_dir: str, docker_configs: list[str], plain_http: bool = False, log=print) -> Entry:
    """The verified cache entry holding the image's /data (release it when done)."""
    ref = parse_ref(image)
    registry = Registry(ref, credentials(docker_configs, ref.registry), plain_http)
    digest, manifest = registry.manifest()
    layers = manifest.get("layers") or []

    def fill(root: str) -> int:
        transferred = 0
        for layer in layers:
            with registry.blob(layer["digest"]) as r:
                hashing = _Hashing(r)
                extract_data(hashing, root)
            if "sha256:" + hashing.sha.hexdigest() != layer["digest"]:
                raise ImageError(f"{image}: layer {layer['digest']} arrived with another digest")
            transferred += int(layer.get("size") or 0)
        if not os.listdir(root):
            raise ImageError(f"{image} has no files under /data (presetOptions.image must hold the model in /data)")
        return transferred

    cache = WeightsCache(cache_dir, log=log)
    needed = sum(int(layer.get("size") or 0) for layer in layers)
    return cache.ensure_filled(cache_repo(image), digest.split(":", 1)[-1], needed, fill)


def link(target: str, path: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    os.symlink(target, tmp)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inference.image_weights", description=__doc__)
    p.add_argument("--image", required=True, help="presetOptions.image")
    p.add_argument("--cache", required=True, help="the node-local weights cache dir")
    p.add_argument("--link", required=True, help="symlink to create, pointing at the image's /data in the cache")
    p.add_argument("--docker-config", action="append", default=[], help="a pull secret's config.json (repeatable)")
    p.add_argument("--plain-http", action="store_true", help="talk HTTP to the registry (tests only)")
    p.add_argument("--termination-log", default="/dev/termination-log")
    args = p.parse_args(argv)

    def log(message: str) -> None:
        print(f"inference.image_weights: {message}", file=sys.stderr, flush=True)

    try:
        entry = fetch_image(args.image, args.cache, args.docker_config, args.plain_http, log)
        link(entry.path, args.link)
        entry.release()
    except (ImageError, CacheError, OSError, tarfile.TarError) as e:
        message = f"cannot pull the weights of {args.image}: {type(e).__name__}: {e}"
        log(message)
        _report(args.termination_log, {"phase": "weights", "error": message})
        return 1
    s = entry.stats
    doc = {"phase": "weights", "image": args.image, "cached": s.cached, "downloaded_bytes": s.downloaded_bytes,
           "total_bytes": entry.listing.total_bytes, "waited_s": round(s.waited_s, 3)}  # fmt: skip
    _report(args.termination_log, doc)
    print(json.dumps(doc, sort_keys=True), flush=True)
    return 0


def _report(path: str, doc: dict) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, sort_keys=True)[:4000])
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
