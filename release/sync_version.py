"""Make the repository's install name the images of pyproject.toml's version (after changing that version):

    python -m release.sync_version          # rewrites metacontroller/hooks/images.env and the hook image tag
    python -m release.sync_version --check  # exit 1, naming the files, when they disagree

The hook server's defaults follow the version by themselves; tests/test_release_install.py checks all three.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from release.images import DEFAULT_REGISTRY, REPO, image_ref, project_version
from release.render_install import IMAGES_ENV, images_env

DEPLOYMENT = Path("metacontroller/hooks/deployment.yaml")
HOOK_IMAGE_LINE = re.compile(rf"^(\s+image: ){re.escape(DEFAULT_REGISTRY)}/hooks:\S+$", re.MULTILINE)


def synced(root: Path, version: str) -> dict[Path, str]:
    """The files as they should read for `version`."""
    deployment = (root / DEPLOYMENT).read_text()
    text, found = HOOK_IMAGE_LINE.subn(lambda m: m.group(1) + image_ref("hooks", version), deployment)
    if found != 1:
        raise ValueError(f"{DEPLOYMENT}: expected one `image: {DEFAULT_REGISTRY}/hooks:<version>` line, found {found}")
    return {IMAGES_ENV: images_env(version), DEPLOYMENT: text}


def main(argv: list[str] | None = None, root: Path = REPO) -> int:
    parser = argparse.ArgumentParser(prog="python -m release.sync_version", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report the files that disagree")
    args = parser.parse_args(argv)
    version = project_version(root / "pyproject.toml")
    stale = [path for path, text in synced(root, version).items() if (root / path).read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path} does not name version {version}: run python -m release.sync_version", file=sys.stderr)
        return 1 if stale else 0
    for path, text in synced(root, version).items():
        (root / path).write_text(text)
    print(f"{version}: " + (", ".join(map(str, stale)) + " updated" if stale else "already in sync"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
