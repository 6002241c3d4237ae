"""Model weights: fetched from the HuggingFace Hub into the node-local cache (inference.weights_cache),
or found in a local dir filled by an init container (presetOptions.image).

`python -m inference.weights --model ORG/NAME --cache DIR` is the init container of inference and tuning
pods: it downloads (or waits for another pod on the node to download) and verifies the weights, then
reports what it did on the last line of stdout and in the container's termination message, where the
Workspace hook reads the cold-start phases from the pod status.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time

from inference.weights_cache.access import NO_NAMESPACE, check_namespace, record_access, was_accepted
from inference.weights_cache.cache import CacheError, Entry, Listing, RepoFile, WeightsCache

TERMINATION_LOG = "/dev/termination-log"


def has_weights(weights_dir: str) -> bool:
    return os.path.isfile(os.path.join(weights_dir, "config.json"))


def ignore_patterns(repo_files: list[str]) -> list[str]:
    """Skip duplicate weight formats: when the repo has safetensors, the .bin/.pth copies and the
    `original/` checkpoints (Llama 3 ships both) are not needed by SGLang or transformers."""
    patterns = ["*.md", ".gitattributes"]
    if any(f.endswith(".safetensors") for f in repo_files):
        patterns += ["*.bin", "*.pth", "*.pt", "original/*", "*.gguf", "*.h5", "*.msgpack", "*.onnx"]
    return patterns


def select_files(files: list[RepoFile]) -> tuple[RepoFile, ...]:
    patterns = ignore_patterns([f.path for f in files])
    return tuple(f for f in files if not any(fnmatch.fnmatch(f.path, p) for p in patterns))


# --- the Hub adapter (huggingface_hub; HF_ENDPOINT selects the server) -----------------------------------
def hub_listing(model: str, revision: str, token: str | None) -> Listing:
    from huggingface_hub import HfApi

    info = HfApi(token=token).model_info(model, revision=revision, files_metadata=True)
    files = []
    for s in info.siblings or []:
        lfs = s.lfs
        sha256 = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
        files.append(RepoFile(s.rfilename, s.size, sha256, s.blob_id))
    if not info.sha:
        raise CacheError(f"the Hub named no commit for {model}@{revision}")
    return Listing(model, info.sha, select_files(files))


def hub_fetcher(model: str, commit: str, token: str | None):
    from inference.hub_files import fetch_file

    return lambda f, entry_dir: fetch_file(model, commit, f, entry_dir, token)


def _falls_back_to_cache(error: Exception) -> bool:
    """Network trouble may fall back to a verified local entry; an answer from the Hub (no access,
    no such repo or revision) may not: a gated model's cached copy must not serve a pod without access."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    return status is None or status >= 500 or status == 429


def _namespace_known(namespace: str | None) -> bool:
    """In a pod the namespace must be named for the offline fallback: without it, every namespace's pods
    would share one access record."""
    return bool(namespace) or not os.environ.get("KUBERNETES_SERVICE_HOST")


def resolve(
    cache: WeightsCache,
    model: str,
    revision: str,
    token: str | None,
    prefer_local: bool,
    log,
    namespace: str | None = None,
) -> Listing:
    """The listing to fetch: from the Hub, or a complete local entry the Hub accepted `namespace` for
    before (prefer_local, or the Hub unreachable). The Hub's answer is recorded for the namespace."""
    check_namespace(namespace)

    def accepted_local() -> Listing | None:
        local = cache.complete_listing_for(model, revision)
        if local is None or not _namespace_known(namespace):
            return None
        return local if was_accepted(cache.root, model, local.commit, namespace) else None

    if prefer_local and (local := accepted_local()) is not None:
        return local
    try:
        listing = hub_listing(model, revision, token)
    except Exception as e:
        local = accepted_local() if _falls_back_to_cache(e) else None
        if local is None:
            if _falls_back_to_cache(e) and cache.complete_listing_for(model, revision) is not None:
                raise CacheError(
                    f"the Hub is unreachable ({type(e).__name__}: {e}) and it never accepted namespace "
                    f"{namespace or NO_NAMESPACE!r} for {model}: the copy on this node serves only namespaces "
                    "whose own request (HF_TOKEN from presetOptions.modelAccessSecret) the Hub answered; "
                    "let the pod reach the Hub once"
                ) from e
            raise
        log(f"the Hub is unreachable ({type(e).__name__}: {e}); using the verified local copy {local.commit}")
        return local
    cache.remember_ref(model, revision, listing.commit)
    record_access(cache.root, model, listing.commit, namespace)
    return listing


def fetch_into_cache(
    model: str,
    cache_dir: str,
    revision: str = "main",
    token: str | None = None,
    prefer_local: bool = False,
    full_verify: bool = False,
    log=lambda _m: None,
    reserve_bytes: int = 1 << 30,
    max_bytes: int | None = None,
    namespace: str | None = None,
) -> Entry:
    """The verified cache entry of model@revision, downloaded if needed. Release it (or exec) when done.
    `namespace` is whose request this is (the pod's): see inference.weights_cache.access."""
    cache = WeightsCache(cache_dir, reserve_bytes=reserve_bytes, max_bytes=max_bytes, log=log)
    listing = resolve(cache, model, revision, token, prefer_local, log, namespace)
    return cache.ensure(listing, hub_fetcher(model, listing.commit, token), full_verify=full_verify)


def ensure_weights(
    model: str | None,
    weights_dir: str,
    token: str | None,
    cache_dir: str | None = None,
    revision: str = "main",
    log=lambda _m: None,
) -> tuple[str, Entry | None]:
    """(model path, cache entry or None). With a model, its verified cache entry (under cache_dir, else
    under weights_dir: a pod-local cache), read as the model container reads it (read-only, as the
    `model-weights` init container left it), else fetched here; without a model, weights_dir, which must
    already hold the weights (presetOptions.image puts them there)."""
    if model:
        cache = WeightsCache(cache_dir or weights_dir, log=log)
        entry = cache.open_read_only(model, revision)
        if entry is None:
            model_dir = cache.model_dir(model)
            if os.path.isdir(model_dir) and not os.access(model_dir, os.W_OK):
                raise CacheError(
                    f"no verified copy of {model}@{revision} in {model_dir}, which this container mounts "
                    "read-only: the model-weights init container fills it; delete the pod to run it again"
                )
            entry = fetch_into_cache(model, cache_dir or weights_dir, revision, token, log=log)
        return entry.path, entry
    if not has_weights(weights_dir):
        raise FileNotFoundError(
            f"{weights_dir}/config.json not found: pass --model <HF repo> with --weights-cache, or put the "
            "weights there (presetOptions.image with the model under /data)"
        )
    return weights_dir, None


def report(entry: Entry) -> dict:
    s = entry.stats
    return {
        "phase": "weights",
        "model": entry.listing.repo,
        "commit": entry.listing.commit,
        "cached": s.cached,
        "downloaded_bytes": s.downloaded_bytes,
        "downloaded_files": s.downloaded_files,
        "total_bytes": entry.listing.total_bytes,
        "waited_s": round(s.waited_s, 3),
        "seconds": round(s.seconds, 3),
        "evicted": s.evicted,
    }


def _write_termination_message(path: str, doc: dict) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, sort_keys=True)[:4000])  # the kubelet keeps at most 4096 bytes
    except OSError:
        pass  # not in a pod (or no termination log): stdout has the same line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inference.weights", description=__doc__)
    p.add_argument("--model", required=True, help="HF repo id, e.g. microsoft/Phi-3-mini-4k-instruct")
    p.add_argument("--revision", default="main", help="branch, tag or commit (default: main)")
    p.add_argument("--cache", required=True, help="the node-local weights cache dir")
    p.add_argument(
        "--namespace",
        default=os.environ.get("POD_NAMESPACE") or None,
        help="the pod's namespace (default: $POD_NAMESPACE): whose Hub access the cache records and checks",
    )
    p.add_argument("--full-verify", action="store_true", help="hash every file of a cached entry again")
    p.add_argument("--reserve-gib", type=float, default=1.0, help="free space to keep on the cache disk")
    p.add_argument("--max-gib", type=float, default=None, help="cap on the cache's size (default: the disk)")
    p.add_argument("--termination-log", default=TERMINATION_LOG)
    args = p.parse_args(argv)

    def log(message: str) -> None:
        print(f"inference.weights: {message}", file=sys.stderr, flush=True)

    started = time.monotonic()
    try:
        entry = fetch_into_cache(
            args.model,
            args.cache,
            args.revision,
            os.environ.get("HF_TOKEN") or None,
            full_verify=args.full_verify,
            log=log,
            reserve_bytes=int(args.reserve_gib * (1 << 30)),
            max_bytes=None if args.max_gib is None else int(args.max_gib * (1 << 30)),
            namespace=args.namespace,
        )
    except Exception as e:  # noqa: BLE001 - network, auth (gated model without HF_TOKEN), disk, verification
        message = f"cannot fetch {args.model}@{args.revision} into {args.cache}: {type(e).__name__}: {e}"
        log(message)
        _write_termination_message(args.termination_log, {"phase": "weights", "error": message})
        return 1
    doc = report(entry)
    doc["seconds"] = round(time.monotonic() - started, 3)
    entry.release()
    _write_termination_message(args.termination_log, doc)
    print(json.dumps(doc, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
