"""`make images`: build the release's images from the same definition the release workflow reads
(release/images.py: image, Dockerfile, target, context), push them to the loopback registry tagged with
pyproject's version, and check that no layer holds the build's pip secrets.

    python -m release.build_images [IMAGE ...] [--registry 127.0.0.1:5050/kaito-sglang] [--no-push]

Where a pinned base cannot be pulled (no Docker Hub), the Dockerfiles' base build args (and only those,
Image.base_args) name local stand-ins (release/local_bases.py); KAITO_IMAGES_PINNED_BASES=1 keeps the pinned
ones. The build time and size of each image go to ~/.cache/kaito-sglang/images/report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from release import local_bases, local_registry
from release.container_engine import Engine, EngineError, build_argv
from release.images import IMAGES, REPO, Image, image_named, image_ref, project_version
from release.layer_scan import scan_pushed_image
from release.pip_secrets import PipSettings, needles, parse_config_list, write_secrets

CACHE = local_registry.STATE.parent
LOCAL_REGISTRY = f"{local_registry.ADDRESS}/kaito-sglang"


@dataclass(frozen=True)
class Built:
    image: str
    reference: str
    seconds: float  # the image's own build, without its local bases
    size_bytes: int
    bases_seconds: float  # local bases made for it in this run (0 when they were there already)
    push_and_scan_seconds: float | None = None  # pushed to the registry and its layers searched for secrets


def machine_pip_settings() -> PipSettings:
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], check=False, capture_output=True, text=True)
    return parse_config_list(out.stdout)


def image_build_argv(
    builder: str,
    image: Image,
    version: str,
    registry: str,
    base_args: Mapping[str, str],
    secrets: Sequence[tuple[str, Path]],
) -> list[str]:
    """The build of one release image: its Dockerfile, target and context as the release workflow builds it;
    the only build args are replacements of its bases."""
    extra = set(base_args) - set(image.base_args)
    if extra:
        raise ValueError(f"image {image.name}: build args {sorted(extra)} are not its base args {image.base_args}")
    return build_argv(
        builder,
        image.dockerfile,
        image.target,
        image.context,
        image_ref(image.name, version, registry),
        base_args,
        secrets,
    )


def build(
    engine: Engine,
    image: Image,
    version: str,
    registry: str,
    secrets: Sequence[tuple[str, Path]],
    pinned_bases: bool = False,
) -> Built:
    started = time.monotonic()
    base_args: dict[str, str] = {}
    if not pinned_bases:
        for name in local_bases.bases_needed([image]):
            local_bases.ensure(engine, name, secrets)
        base_args = local_bases.build_args_for(image)
    bases_seconds = time.monotonic() - started
    reference = image_ref(image.name, version, registry)
    started = time.monotonic()
    engine.run(image_build_argv(engine.builder, image, version, registry, base_args, secrets), cwd=REPO)
    seconds = time.monotonic() - started
    return Built(image.name, reference, round(seconds, 1), engine.size_bytes(reference), round(bases_seconds, 1))


def public_certificates() -> str:
    """The public CA certificates (Mozilla's, as certifi and Debian's ca-certificates ship them): what is in
    this machine's bundle beyond them is private to it."""
    try:
        import certifi

        texts = [Path(certifi.where()).read_text()]
    except ImportError:
        from pip._vendor import certifi as pip_certifi

        texts = [Path(pip_certifi.where()).read_text()]
    texts += [p.read_text(errors="replace") for p in sorted(Path("/usr/share/ca-certificates").rglob("*.crt"))]
    return "\n".join(texts)


def secret_needles(settings: PipSettings) -> dict[str, bytes]:
    bundle = Path(settings.cert).read_text() if settings.cert else ""
    return needles(settings, bundle, public_certificates())


def write_report(built: Sequence[Built], path: Path) -> None:
    """Merge this run's figures into the report (other images keep their last figures)."""
    report = json.loads(path.read_text()) if path.exists() else {}
    report.update({b.image: asdict(b) for b in built})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m release.build_images", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", help="image names (default: all five)")
    parser.add_argument("--registry", default=LOCAL_REGISTRY, help="registry/path to tag and push to")
    parser.add_argument("--no-push", action="store_true", help="build only (no registry, no layer scan)")
    parser.add_argument("--report", type=Path, default=CACHE / "report.json")
    args = parser.parse_args(argv)
    try:
        chosen = [image_named(n) for n in args.images] if args.images else list(IMAGES)
        engine = Engine.detect()
    except (ValueError, EngineError) as err:
        print(f"release.build_images: {err}", file=sys.stderr)
        return 2
    version = project_version()
    pinned = os.environ.get("KAITO_IMAGES_PINNED_BASES") == "1"
    settings = machine_pip_settings()
    failures: list[str] = []
    built: list[Built] = []
    with tempfile.TemporaryDirectory(prefix="kaito-images-") as tmp:
        secrets = write_secrets(settings, Path(tmp))
        find = secret_needles(settings)
        if not args.no_push:
            local_registry.start()
        for image in chosen:
            print(f"== {image.name}: {image.dockerfile} target {image.target or '(last)'} with {engine.builder}")
            try:
                done = build(engine, image, version, args.registry, secrets, pinned)
            except (EngineError, subprocess.CalledProcessError) as err:
                failures.append(f"{image.name}: build failed: {err}")
                continue
            built.append(done)
            print(f"== {image.name}: built in {done.seconds:.0f} s, {done.size_bytes / 1e6:.0f} MB: {done.reference}")
            if args.no_push:
                continue
            started = time.monotonic()
            engine.push(done.reference, done.reference)
            with tempfile.TemporaryDirectory(prefix="kaito-layers-", dir=CACHE) as layers:
                findings = scan_pushed_image(done.reference, find, Path(layers))
            built[-1] = replace(done, push_and_scan_seconds=round(time.monotonic() - started, 1))
            if findings:
                failures += [f"{image.name}: secret in a layer: {f}" for f in findings]
            else:
                print(
                    f"== {image.name}: pushed and scanned in {built[-1].push_and_scan_seconds:.0f} s; no layer holds "
                    f"{', '.join(find) or 'a pip secret (none set)'}"
                )
    write_report(built, args.report)
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
