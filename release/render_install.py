"""Render the install manifests of a release: `metacontroller/` and `overlays/` with every image named by the
release version and, once the images are pushed, pinned by digest.

    python -m release.render_install --out dist/install                        # pyproject's version, tags only
    python -m release.render_install --out dist/install --digests-dir digests  # + the digests CI recorded
    python -m release.render_install --out dist/install --version 0.2.0 --registry ghcr.io/acme \\
        --digest hooks=sha256:... --digest runtime=sha256:...

The output is what `kubectl apply -k <out>/metacontroller` (AKS) or `kubectl apply -k <out>/overlays/byo`
installs. The hook image is pinned with kustomize's own image transformer (`images:` in
metacontroller/hooks/kustomization.yaml); the images the hook server puts in Workspace pods are its
KAITO_*_IMAGE settings (metacontroller/hooks/images.env). Nothing else in the copy changes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from release.images import DEFAULT_REGISTRY, IMAGES, REPO, check_digest, image_ref, project_version

INSTALL_DIRS = ("metacontroller", "overlays")
HOOKS_KUSTOMIZATION = Path("metacontroller/hooks/kustomization.yaml")
IMAGES_ENV = Path("metacontroller/hooks/images.env")
# How the shipped Deployment names the hook image (kustomize matches it by name, whatever its tag).
SHIPPED_HOOK_IMAGE = f"{DEFAULT_REGISTRY}/hooks"


def images_env(version: str, registry: str = DEFAULT_REGISTRY, digests: Mapping[str, str] | None = None) -> str:
    """metacontroller/hooks/images.env for a release (the repository's own file is this, tags only)."""
    digests = digests or {}
    lines = [f"{i.env}={image_ref(i.name, version, registry, digests.get(i.name))}" for i in IMAGES if i.env]
    return "\n".join(lines) + "\n"


def hook_image_transformer(version: str, registry: str, digest: str | None) -> str:
    entry = [
        "images:",
        f"  - name: {SHIPPED_HOOK_IMAGE}",
        f"    newName: {registry}/hooks",
        f'    newTag: "{version}"',
    ]
    if digest:
        entry.append(f"    digest: {check_digest('hooks', digest)}")
    return "\n".join(entry) + "\n"


def render(
    out: Path,
    version: str,
    registry: str = DEFAULT_REGISTRY,
    digests: Mapping[str, str] | None = None,
    source: Path = REPO,
) -> Path:
    """Copy the install into `out` and name every image for `version` (and `digests`, by image name)."""
    digests = dict(digests or {})
    unknown = set(digests) - {i.name for i in IMAGES}
    if unknown:
        raise ValueError(f"digests for unknown images {sorted(unknown)}; the images are {[i.name for i in IMAGES]}")
    for image in IMAGES:  # every input is checked before anything is written
        image_ref(image.name, version, registry, digests.get(image.name))
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} is not empty: render into a new folder")
    for name in INSTALL_DIRS:
        shutil.copytree(source / name, out / name, ignore=shutil.ignore_patterns("__pycache__"))
    kustomization = out / HOOKS_KUSTOMIZATION
    text = kustomization.read_text()
    if "\nimages:" in f"\n{text}":
        raise ValueError(f"{HOOKS_KUSTOMIZATION} already has an images: list; the renderer adds its own")
    kustomization.write_text(text.rstrip("\n") + "\n" + hook_image_transformer(version, registry, digests.get("hooks")))
    (out / IMAGES_ENV).write_text(images_env(version, registry, digests))
    return out


def read_digests_dir(folder: Path) -> dict[str, str]:
    """One file per image, named after it, holding its digest (what the release workflow's build jobs upload)."""
    return {p.name: p.read_text().strip() for p in sorted(folder.iterdir()) if p.is_file()}


def parse_digest(text: str) -> tuple[str, str]:
    name, sep, digest = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--digest {text!r}: write NAME=sha256:<64 hex>, e.g. hooks=sha256:...")
    return name, digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m release.render_install", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="new folder to write metacontroller/ and overlays/ into"
    )
    parser.add_argument("--version", help="release version (default: pyproject.toml's)")
    parser.add_argument(
        "--registry", default=DEFAULT_REGISTRY, help=f"where the images live (default {DEFAULT_REGISTRY})"
    )
    parser.add_argument("--digest", type=parse_digest, action="append", default=[], metavar="NAME=sha256:...")
    parser.add_argument("--digests-dir", type=Path, help="folder with one file per image name holding its digest")
    parser.add_argument("--require-digests", action="store_true", help="fail unless every image has a digest")
    args = parser.parse_args(argv)
    try:
        version = args.version or project_version()
        digests = read_digests_dir(args.digests_dir) if args.digests_dir else {}
        digests.update(dict(args.digest))
        missing = [i.name for i in IMAGES if i.name not in digests]
        if args.require_digests and missing:
            raise ValueError(f"--require-digests: no digest for {missing}")
        render(args.out, version, args.registry, digests)
    except (ValueError, OSError) as err:
        print(f"render_install: {err}", file=sys.stderr)
        return 2
    pinned = "by digest" if not missing else f"by tag for {missing}" if len(missing) < len(IMAGES) else "by tag"
    print(f"rendered the {version} install into {args.out} (images in {args.registry}, pinned {pinned})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
