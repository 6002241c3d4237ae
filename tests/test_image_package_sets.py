"""Which of the repository's packages each image carries: the hooks image only the hooks and
workload_contract (enough to import every hooks module without inference/ or tuning/), and every
workload image the workload_contract its code imports.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKLOAD_PACKAGES = ("inference", "tuning")
CONTRACT = "workload_contract"


def stages(dockerfile: Path) -> dict[str, list[list[str]]]:
    """Each stage's instructions as words (continuation lines joined), by stage name ('' for an unnamed one)."""
    out: dict[str, list[list[str]]] = {}
    current: list[list[str]] = []
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            current = []
            out[words[3] if len(words) > 3 and words[2] == "AS" else ""] = current
        elif words and not words[0].startswith("#"):
            current.append(words)
    return out


def copied_from_context(instructions: list[list[str]]) -> set[str]:
    """The build-context paths a stage COPYs (not what it copies from another stage), without a trailing /."""
    sources: set[str] = set()
    for words in instructions:
        if words[0] == "COPY" and not any(w.startswith("--from") for w in words):
            sources.update(w.rstrip("/") for w in words[1:-1] if not w.startswith("--"))
    return sources


def allowed_by_dockerignore(path: Path) -> set[str]:
    """The `!path` lines of an ignore file that starts by ignoring everything (`*`)."""
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", f"{path.name} does not start from an empty context"
    return {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}


def imported_modules(package_dir: Path) -> set[str]:
    """Every module a package's files import, at module level or inside a function."""
    names: set[str] = set()
    for file in package_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return names


def package_modules(package_dir: Path) -> set[str]:
    """The dotted names of a package's submodules, as setuptools installs them: in folders with an __init__.py
    all the way up (a folder without one is not a package to packages.find), without __main__."""
    names = set()
    for file in package_dir.rglob("*.py"):
        folders = file.relative_to(package_dir.parent).parents
        if file.stem == "__main__" or not all((REPO / f / "__init__.py").is_file() for f in list(folders)[:-1]):
            continue
        names.add(file.relative_to(package_dir.parent).with_suffix("").as_posix().replace("/", "."))
    return {n.removesuffix(".__init__") for n in names} - {package_dir.name}


def hooks_image_packages() -> set[str]:
    """The package folders hooks/Dockerfile's build stage copies and installs."""
    copied = copied_from_context(stages(REPO / "hooks" / "Dockerfile")["build"])
    return {p for p in copied if (REPO / p / "__init__.py").is_file()}


def test_the_hooks_image_copies_the_hooks_and_the_contract_only():
    assert hooks_image_packages() == {"hooks", CONTRACT}
    copied = copied_from_context(stages(REPO / "hooks" / "Dockerfile")["build"])
    assert copied == {"pyproject.toml", "README.md", "hooks", CONTRACT}
    assert allowed_by_dockerignore(REPO / "hooks" / "Dockerfile.dockerignore") == copied


def test_no_hooks_module_imports_inference_or_tuning():
    """Lazy imports too: the hooks image has neither package, so such a call would fail only when it runs."""
    bad = {m for m in imported_modules(REPO / "hooks") if m.split(".")[0] in WORKLOAD_PACKAGES}
    assert not bad, f"hooks import {sorted(bad)}; move what both sides need into {CONTRACT}/"


def test_the_contract_needs_only_the_stdlib_and_pyyaml():
    tops = {m.split(".")[0] for m in imported_modules(REPO / CONTRACT)}
    assert tops - set(sys.stdlib_module_names) <= {"yaml", CONTRACT}, tops


# Runs in a fresh interpreter without site processing, so the editable install's finder (which maps
# inference and tuning to this checkout) is not loaded; only the copied folder and site-packages are searched.
IMPORT_EVERY_HOOKS_MODULE = """
import importlib, importlib.util, json, pkgutil, sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")] + [sys.argv[1], sys.argv[2]]
assert all(importlib.util.find_spec(p) is None for p in ("inference", "tuning")), "inference/tuning reachable"
import hooks
modules = [m.name for m in pkgutil.walk_packages(hooks.__path__, "hooks.") if not m.name.endswith(".__main__")]
imported = [importlib.import_module(name).__name__ for name in modules]
workload = sorted(m for m in sys.modules if m.split(".")[0] in ("inference", "tuning"))
print(json.dumps({"imported": imported, "workload": workload, "hooks_file": hooks.__file__}))
"""


def test_the_hooks_image_package_set_imports_without_inference_and_tuning(tmp_path):
    for package in sorted(hooks_image_packages()):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    site_packages = sysconfig.get_paths()["purelib"]
    proc = subprocess.run(
        [sys.executable, "-S", "-c", IMPORT_EVERY_HOOKS_MODULE, str(tmp_path), site_packages],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["hooks_file"].startswith(str(tmp_path)), result["hooks_file"]
    assert package_modules(REPO / "hooks") <= set(result["imported"]), "some hooks modules were not imported"
    assert result["workload"] == []


def test_every_workload_image_carries_the_contract():
    inference = stages(REPO / "inference" / "Dockerfile")
    assert {"inference", CONTRACT} <= copied_from_context(inference["kaito-packages"])
    for target in ("runtime", "runtime-legacy", "router"):
        assert ["COPY", "--from=kaito-packages", "/opt/kaito/", "/opt/kaito/"] in inference[target], target
    assert {"inference", CONTRACT} <= allowed_by_dockerignore(REPO / "inference" / "Dockerfile.dockerignore")
    tuning = stages(REPO / "tuning" / "Dockerfile")[""]
    assert {"tuning", CONTRACT} <= copied_from_context(tuning)
    for package in WORKLOAD_PACKAGES:
        assert any(m.split(".")[0] == CONTRACT for m in imported_modules(REPO / package)), package
