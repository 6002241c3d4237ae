"""What a pushed tag releases, as GitHub Actions step outputs (key=value lines for $GITHUB_OUTPUT):

    python -m release.tag v0.2.0 --owner Kaito-SGLang
    version=0.2.0
    registry=ghcr.io/kaito-sglang

Fails (exit 2, with the reason) when the tag does not name pyproject.toml's version, so a release can only
publish what the repository says it is.
"""

from __future__ import annotations

import argparse
import sys

from release.images import check_registry, project_version, version_of_tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m release.tag", description=__doc__.split("\n\n")[0])
    parser.add_argument("tag", help="the pushed git tag, v<version>")
    parser.add_argument("--owner", required=True, help="the GitHub owner; images go to ghcr.io/<owner in lower case>")
    args = parser.parse_args(argv)
    try:
        version = version_of_tag(args.tag, project_version())
        registry = check_registry(f"ghcr.io/{args.owner.lower()}")
    except ValueError as err:
        print(f"release.tag: {err}", file=sys.stderr)
        return 2
    print(f"version={version}")
    print(f"registry={registry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
