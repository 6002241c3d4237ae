"""The release workflow and `make images` build the same images from one definition (release/images.py):
image, Dockerfile, target, context, and the base build args that `make images` may replace with local
bases. A drift in either, or a Dockerfile growing a base the definition does not name, fails here.
Also the pure parts of the image builder: the build command lines, the pip secrets, the layer scan, and
the hook Deployment as a local container.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from images_support import filled_aks_settings, hook_container_spec, run_argv

from release.build_images import image_build_argv
from release.container_engine import EngineError, build_argv, pick_builder
from release.images import IMAGES, REPO, github_matrix, image_named
from release.layer_scan import scan_layer
from release.local_bases import FOR_BUILD_ARG, bases_needed, build_args_for
from release.pip_secrets import PipSettings, needles, parse_config_list, pip_conf_text, write_secrets

WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
MATRIX_REF = re.compile(r"\$\{\{\s*matrix\.([\w-]+)\s*\}\}")


def release_workflow_drift(workflow: dict) -> list[str]:
    """How the release workflow's image builds differ from release/images.py (empty: in step)."""
    problems = []
    version_job, images_job = workflow["jobs"]["version"], workflow["jobs"]["images"]
    runs = [step.get("run", "") for step in version_job["steps"]]
    if not any(
        re.fullmatch(r'python -m release\.images --matrix \| tee -a "\$GITHUB_OUTPUT"', r.strip()) for r in runs
    ):
        problems.append("the version job does not print `python -m release.images --matrix` into its outputs")
    step_id = next((s.get("id") for s in version_job["steps"] if "release.images --matrix" in s.get("run", "")), None)
    if version_job.get("outputs", {}).get("matrix") != f"${{{{ steps.{step_id}.outputs.matrix }}}}":
        problems.append("the version job's output `matrix` is not that step's output")
    if images_job["strategy"].get("matrix") != "${{ fromJSON(needs.version.outputs.matrix) }}":
        problems.append("the images job's matrix is not the one release/images.py printed (a copy in YAML drifts)")
    build = next(s for s in images_job["steps"] if s.get("uses", "").startswith("docker/build-push-action@"))["with"]
    expected = {"context": "context", "file": "dockerfile", "target": "target", "platforms": "platforms"}
    for key, field in expected.items():
        if build.get(key) != f"${{{{ matrix.{field} }}}}":
            problems.append(f"build step {key}: {build.get(key)!r} is not matrix.{field}")
    if "build-args" in build:
        problems.append("build step passes build-args that `make images` does not know about")
    used = set(MATRIX_REF.findall(yaml.safe_dump(images_job)))
    given = set(github_matrix()["include"][0])
    if used - given:
        problems.append(f"the images job reads matrix fields release/images.py does not give: {sorted(used - given)}")
    if given - used:
        problems.append(f"the images job ignores matrix fields: {sorted(given - used)}")
    return problems


def test_release_workflow_builds_what_release_images_defines():
    assert release_workflow_drift(yaml.safe_load(WORKFLOW.read_text())) == []


def test_the_drift_check_sees_a_matrix_copied_into_the_workflow_and_a_hard_coded_context():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    workflow["jobs"]["images"]["strategy"]["matrix"] = github_matrix()
    assert any("copy in YAML" in p for p in release_workflow_drift(workflow))
    workflow = yaml.safe_load(WORKFLOW.read_text())
    build = next(s for s in workflow["jobs"]["images"]["steps"] if "build-push-action" in s.get("uses", ""))
    build["with"]["context"] = "."
    assert release_workflow_drift(workflow) == [
        "build step context: '.' is not matrix.context",
        "the images job ignores matrix fields: ['context']",
    ]


def test_the_matrix_printed_for_the_workflow_is_every_image_of_the_definition():
    out = subprocess.run(
        ["python3", "-m", "release.images", "--matrix"], cwd=REPO, capture_output=True, text=True, check=True
    )
    key, value = out.stdout.strip().split("=", 1)
    import json

    assert key == "matrix" and json.loads(value) == github_matrix()
    assert [m["image"] for m in github_matrix()["include"]] == [i.name for i in IMAGES]


def test_make_images_runs_the_builder_over_the_same_definition():
    out = subprocess.run(["make", "-n", "images"], cwd=REPO, capture_output=True, text=True, check=True)
    assert re.search(r"-m release\.build_images(\s|$)", out.stdout), out.stdout


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_make_images_builds_each_image_as_the_release_does(image):
    argv = image_build_argv("buildah", image, "0.1.0", "127.0.0.1:5050/kaito-sglang", build_args_for(image), [])
    assert argv[argv.index("-f") + 1] == image.dockerfile and argv[-1] == image.context
    assert (argv[argv.index("--target") + 1] if "--target" in argv else None) == image.target
    passed = {a.split("=", 1)[0] for i, a in enumerate(argv) if argv[i - 1] == "--build-arg"}
    assert passed == set(image.base_args)  # only bases are replaced, every one of them
    with pytest.raises(ValueError, match="not its base args"):
        image_build_argv("buildah", image, "0.1.0", "127.0.0.1:5050/x", {"OTHER": "y"}, [])


def from_args(dockerfile: Path, target: str | None) -> set[str]:
    """The build args naming a base of `target` (the last stage when None), through COPY --from and FROM <stage>."""
    stages: dict[str, tuple[str, set[str]]] = {}  # stage -> (FROM, stages it copies from)
    order: list[str] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "FROM":
            name = words[3] if len(words) > 3 else f"#{len(order)}"
            stages[name] = (words[1], set())
            order.append(name)
        elif words[0] == "COPY" and order:
            stages[order[-1]][1].update(w.split("=", 1)[1] for w in words if w.startswith("--from="))
    args: set[str] = set()
    todo = [target or order[-1]]
    while todo:
        base, copies = stages[todo.pop()]
        if base in stages:
            todo.append(base)
        else:
            args.update(re.findall(r"\$\{(\w+)\}", base))
        todo += [c for c in copies if c in stages]
    return args


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_base_args_are_exactly_the_bases_the_dockerfile_stage_uses(image):
    assert from_args(REPO / image.dockerfile, image.target) == set(image.base_args)
    assert set(image.base_args) <= set(FOR_BUILD_ARG)


def test_local_bases_come_parents_first():
    assert bases_needed([image_named("tuning")]) == ["python", "pytorch"]
    assert bases_needed(list(IMAGES)) == ["python", "sglang", "pytorch"]


def test_build_command_lines_for_buildah_and_docker():
    secrets = [("pip.conf", Path("/tmp/s/pip.conf"))]
    argv = build_argv("buildah", "hooks/Dockerfile", None, ".", "r/hooks:1", {"PYTHON_IMAGE": "b"}, secrets)
    assert argv[:2] == ["buildah", "bud"] and "--layers" in argv and argv[argv.index("--isolation") + 1] == "chroot"
    assert argv[-1] == "." and "--target" not in argv
    assert argv[argv.index("--secret") + 1] == "id=pip.conf,src=/tmp/s/pip.conf"
    docker = build_argv("docker", "inference/Dockerfile", "router", ".", "r/router:1", {}, [])
    assert docker[:4] == ["docker", "buildx", "build", "--load"] and docker[docker.index("--target") + 1] == "router"
    with pytest.raises(EngineError, match="KAITO_IMAGE_BUILDER"):
        build_argv("kaniko", "f", None, ".", "t", {}, [])


def test_builder_choice():
    assert pick_builder({}, docker_answers=True, buildah_present=True) == "docker"
    assert pick_builder({}, docker_answers=False, buildah_present=True) == "buildah"
    assert pick_builder({"KAITO_IMAGE_BUILDER": "buildah"}, docker_answers=True, buildah_present=True) == "buildah"
    with pytest.raises(EngineError, match="apt-get install buildah"):
        pick_builder({}, docker_answers=False, buildah_present=False)
    with pytest.raises(EngineError, match="KAITO_IMAGE_BUILDER='podman'"):
        pick_builder({"KAITO_IMAGE_BUILDER": "podman"}, docker_answers=False, buildah_present=True)


CONFIG_LIST = """global.cert='/etc/ssl/certs/bundle.crt'
global.index-url='https://pypi.org/simple'
:env:.cert='/etc/ssl/certs/env.crt'
:env:.index-url='https://user:token@mirror.example/simple'
:env:.default-timeout='180'
"""


def test_pip_settings_from_pip_config_list_with_the_environment_winning(tmp_path):
    settings = parse_config_list(CONFIG_LIST)
    assert settings.cert == "/etc/ssl/certs/env.crt"
    assert settings.options == (("index-url", "https://user:token@mirror.example/simple"),)
    assert pip_conf_text(settings) == (
        "[global]\ncert = /run/secrets/pip-ca\nindex-url = https://user:token@mirror.example/simple\n"
    )
    secrets = dict(write_secrets(settings, tmp_path))
    assert secrets["pip-ca"] == Path("/etc/ssl/certs/env.crt")
    assert secrets["pip.conf"].stat().st_mode & 0o777 == 0o600
    assert write_secrets(parse_config_list(":env:.default-timeout='180'\n"), tmp_path) == []


def pem(body: str) -> str:
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def layer(files: dict[str, bytes]) -> io.BytesIO:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    data.seek(0)
    return data


def test_layer_scan_finds_a_private_ca_an_index_token_and_a_left_pip_conf():
    public, private = "A" * 200, "B" * 130 + "C" * 70
    settings = PipSettings("/x.crt", (("index-url", "https://user:token@mirror.example/simple"),))
    find = needles(settings, pem(public) + pem(private), pem(public))
    assert set(find) == {"private CA certificate 1", "pip index-url", "the build's pip.conf"}
    clean = layer({"etc/ssl/certs/ca-certificates.crt": pem(public).encode(), "app/x.py": b"print(1)\n"})
    assert scan_layer(clean, find) == []
    leaky = layer(
        {
            "usr/local/share/ca-certificates/x.crt": pem(private).encode(),
            "root/.config/pip/pip.conf": b"[global]\nindex-url = https://user:token@mirror.example/simple\n",
            "etc/pip.conf": b"",
        }
    )
    assert scan_layer(leaky, find) == [
        "usr/local/share/ca-certificates/x.crt: private CA certificate 1",
        "root/.config/pip/pip.conf: pip index-url",
        "etc/pip.conf: a file where a build secret was mounted",
    ]
    # The public index is no secret (pip's own code names it).
    assert needles(PipSettings(None, (("index-url", "https://pypi.org/simple"),)), "", "") == {
        "the build's pip.conf": b"[global]\nindex-url = https://pypi.org/simple\n"
    }


def test_the_hook_deployment_as_a_local_container():
    deployment = yaml.safe_load((REPO / "metacontroller" / "hooks" / "deployment.yaml").read_text())
    settings = {**filled_aks_settings(), "AZURE_CLUSTER_NAME": "c"}
    spec = hook_container_spec(deployment, "127.0.0.1:9443", settings, {"KAITO_TUNING_IMAGE": "t"}, {"tls": "/s"})
    assert spec.command[spec.command.index("--bind") + 1] == "127.0.0.1:9443"
    assert spec.command[spec.command.index("--tls-dir") + 1] == "/etc/kaito-hooks/tls"
    assert spec.env["KAITO_NODE_PROVISIONING"] == "aks" and spec.env["AZURE_CLUSTER_NAME"] == "c"
    assert spec.env["KAITO_TUNING_IMAGE"] == "t" and spec.env["ARM_ENDPOINT"] == ""  # as aks.env leaves it
    assert (spec.user, spec.read_only, spec.drop_all_capabilities, spec.no_new_privileges) == (
        "65532:65532",
        True,
        True,
        True,
    )
    assert spec.tmpfs == [("/tmp", "16Mi")] and spec.binds == [("/s", "/etc/kaito-hooks/tls", True)]
    argv = run_argv("podman", "img", spec, "n")
    assert argv[argv.index("--tmpfs") + 1] == "/tmp:rw,size=16m,mode=1777" and "--read-only" in argv
    assert argv[-len(spec.command) - 1 :] == ["img", *spec.command]
    with pytest.raises(ValueError, match="needs ConfigMap kaito-hooks-aks key"):
        hook_container_spec(deployment, "127.0.0.1:1", {}, {}, {"tls": "/s"})


def test_the_images_make_images_pushes_stand_in_for_every_image_the_install_names():
    from images_support import IMAGES_ENV, env_file, pushed_images_env

    from release.images import project_version

    pushed = pushed_images_env("127.0.0.1:5050/kaito-sglang")
    assert set(pushed) == set(env_file(IMAGES_ENV))
    for setting, reference in pushed.items():
        shipped = env_file(IMAGES_ENV)[setting]
        assert reference == "127.0.0.1:5050/kaito-sglang/" + shipped.rsplit("/", 1)[1]
        assert reference.endswith(f":{project_version()}")
