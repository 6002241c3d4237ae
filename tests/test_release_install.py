"""Releases: the install rendered for a version names every image by that version (or pins it by digest),
nothing says `latest`, and the repository's own install and the hook server's defaults agree with
pyproject.toml's version (the one source of truth).

The install is built with kubectl's own kustomize, as `kubectl apply -k` would. Its one remote resource
(Metacontroller's upstream manifests) cannot be fetched offline, so the build runs on the rendered copy
with that line and the install's patches of those objects removed (tests/install_support.py);
Metacontroller's own image is upstream's, pinned by its release in that URL.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import fields
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from install_support import prepare_offline

from hooks import version as hooks_version
from hooks.settings import Settings
from release import render_install, sync_version, tag
from release.images import IMAGES, REPO, image_ref, project_version

pytestmark = pytest.mark.integration  # renders the install with the release tooling

KUBECTL = shutil.which("kubectl")
REGISTRY = "ghcr.io/acme-corp"
VERSION = "7.8.9"
DIGESTS = {image.name: "sha256:" + f"{n:x}" * 64 for n, image in enumerate(IMAGES, start=1)}
TARGETS = ["metacontroller", "overlays/byo"]


def build(root: Path, target: str) -> list[dict]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (its built-in kustomize builds the install)")
    prepare_offline(root, upstream=False)
    out = subprocess.run(
        [KUBECTL, "kustomize", str(root / target)], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def image_refs(objs: list[dict]) -> dict[str, str]:
    """Every image the install makes a cluster pull: container images, and the hook server's KAITO_*_IMAGE."""
    refs: dict[str, str] = {}

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "image" and isinstance(value, str):
                    refs[where] = value
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]")

    for obj in objs:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        walk(obj.get("spec"), name)
        if obj["kind"] == "ConfigMap":
            refs.update({f"{name}:{k}": v for k, v in (obj.get("data") or {}).items() if k.endswith("_IMAGE")})
    return refs


def hook_server_env(objs: list[dict]) -> dict[str, str]:
    """The KAITO_*_IMAGE settings the hook Deployment's containers get from the ConfigMaps it names."""
    configmaps = {o["metadata"]["name"]: o.get("data") or {} for o in objs if o["kind"] == "ConfigMap"}
    (deploy,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "kaito-hooks"]
    env: dict[str, str] = {}
    for source in deploy["spec"]["template"]["spec"]["containers"][0].get("envFrom") or []:
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"the hook Deployment reads a ConfigMap that is not installed: {name}"
        env.update(configmaps[name])
    return env


def expected(digests: dict[str, str] | None) -> set[str]:
    return {image_ref(i.name, VERSION, REGISTRY, (digests or {}).get(i.name)) for i in IMAGES}


@pytest.mark.parametrize("digests", [None, DIGESTS], ids=["tags", "digests"])
@pytest.mark.parametrize("target", TARGETS)
def test_rendered_install_names_every_image_by_the_release(tmp_path, target, digests):
    root = render_install.render(tmp_path / "install", VERSION, REGISTRY, digests)
    objs = build(root, target)
    refs = image_refs(objs)
    assert set(refs.values()) == expected(digests), refs
    for where, ref in refs.items():
        assert "latest" not in ref, f"{where}: {ref}"
        name_and_tag, _, digest = ref.partition("@")
        assert name_and_tag.endswith(f":{VERSION}"), f"{where}: {ref} is not the {VERSION} release"
        if digests:
            assert digest == DIGESTS[name_and_tag.rsplit("/", 1)[1].split(":")[0]], f"{where}: {ref}"
    # The hook server really gets the pod images (the BYO overlay rewrites its env; envFrom must survive).
    settings = Settings.from_env(hook_server_env(objs))
    for image in IMAGES:
        if image.env:
            field = settings_field(image.env)
            assert getattr(settings, field) == image_ref(image.name, VERSION, REGISTRY, (digests or {}).get(image.name))


def test_the_repository_install_is_the_release_install_by_tag():
    """`kubectl apply -k` of the repository at a tag installs that version's images (pyproject.toml's)."""
    version = project_version()
    for path, text in sync_version.synced(REPO, version).items():
        assert (REPO / path).read_text() == text, (
            f"{path} does not name version {version}: python -m release.sync_version"
        )
    deployment = yaml.safe_load((REPO / sync_version.DEPLOYMENT).read_text())
    hook_image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert hook_image == image_ref("hooks", version), f"{sync_version.DEPLOYMENT}: image {hook_image}"
    assert "\nimages:" not in "\n" + (REPO / render_install.HOOKS_KUSTOMIZATION).read_text()


def test_sync_version_makes_the_install_follow_a_new_version(tmp_path, capsys):
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(REPO / "metacontroller", tmp_path / "metacontroller")
    pyproject = tmp_path / "pyproject.toml"
    old = project_version(pyproject)
    pyproject.write_text(pyproject.read_text().replace(f'version = "{old}"', 'version = "0.42.0"', 1))
    assert sync_version.main(["--check"], tmp_path) == 1
    assert "metacontroller/hooks/images.env does not name version 0.42.0" in capsys.readouterr().err
    assert sync_version.main([], tmp_path) == 0
    assert sync_version.main(["--check"], tmp_path) == 0
    assert (tmp_path / render_install.IMAGES_ENV).read_text() == render_install.images_env("0.42.0")
    deployment = yaml.safe_load((tmp_path / sync_version.DEPLOYMENT).read_text())
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == image_ref("hooks", "0.42.0")


def settings_field(env_name: str) -> str | None:
    """The Settings field the hook server fills from the environment variable `env_name`, if any."""
    sentinel = "registry.invalid/sentinel:1"
    read = Settings.from_env({env_name: sentinel})
    return next((f.name for f in fields(Settings) if getattr(read, f.name) == sentinel), None)


def test_hook_server_defaults_name_the_images_of_its_version():
    version = project_version()
    defaults = Settings.from_env({})
    for image in IMAGES:
        if image.env is None:  # the hook image itself: the Deployment names it
            continue
        field = settings_field(image.env)
        assert field, f"the hook server does not read {image.env}"
        assert getattr(defaults, field) == image_ref(image.name, version), f"Settings.{field} default"
    shipped = dict(line.split("=", 1) for line in render_install.images_env(version).split())
    assert Settings.from_env(shipped) == defaults


def test_installed_hook_server_reads_its_version_from_the_package_metadata(tmp_path):
    """In the hook image no pyproject.toml lies beside the package: pip's metadata has the version."""
    assert (
        hooks_version.project_version(tmp_path / "absent.toml") == metadata.version("kaito-sglang") == project_version()
    )
    other = tmp_path / "pyproject.toml"
    other.write_text('[project]\nname = "someone-else"\nversion = "9.9.9"\n')
    assert hooks_version.project_version(other) == project_version()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"version": "latest"}, "version 'latest' is not a release version"),
        ({"version": "v1.2.3"}, "is not a release version"),
        ({"digests": {"hooks": "sha256:abc"}}, "digest of image 'hooks' must look like sha256:<64 hex digits>"),
        ({"digests": {"gateway": DIGESTS["hooks"]}}, "digests for unknown images ['gateway']"),
        ({"registry": "GHCR.io/Acme"}, "must be host/path in lower case"),
    ],
)
def test_render_refuses_bad_input_naming_it(tmp_path, kwargs, message):
    args = {"version": VERSION, "registry": REGISTRY, "digests": None} | kwargs
    with pytest.raises(ValueError) as err:
        render_install.render(tmp_path / "out", **args)
    assert message in str(err.value)
    assert not (tmp_path / "out").exists(), "nothing is written when the input is bad"


def test_render_cli_reads_the_digests_the_build_jobs_recorded(tmp_path, capsys):
    digests = tmp_path / "digests"
    digests.mkdir()
    for name, digest in DIGESTS.items():
        (digests / name).write_text(digest + "\n")
    out = tmp_path / "install"
    args = [
        "--out",
        str(out),
        "--version",
        VERSION,
        "--registry",
        REGISTRY,
        "--digests-dir",
        str(digests),
        "--require-digests",
    ]
    assert render_install.main(args) == 0
    assert "pinned by digest" in capsys.readouterr().out
    assert (out / render_install.IMAGES_ENV).read_text() == render_install.images_env(VERSION, REGISTRY, DIGESTS)
    (digests / "tuning").unlink()
    assert render_install.main([*args[:1], str(tmp_path / "again"), *args[2:]]) == 2
    assert "--require-digests: no digest for ['tuning']" in capsys.readouterr().err
    (digests / "tuning").write_text(DIGESTS["tuning"])
    assert render_install.main(args) == 2  # out is not empty any more
    assert "is not empty" in capsys.readouterr().err


def test_a_tag_releases_only_pyprojects_version(capsys):
    version = project_version()
    assert tag.main([f"v{version}", "--owner", "Kaito-SGLang"]) == 0
    assert capsys.readouterr().out.split() == [f"version={version}", "registry=ghcr.io/kaito-sglang"]
    assert tag.main(["v999.0.0", "--owner", "kaito-sglang"]) == 2
    assert f"does not match pyproject.toml's version '{version}'" in capsys.readouterr().err
