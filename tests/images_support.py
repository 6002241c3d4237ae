"""The built images as containers on this machine: podman (with runc) where buildah built them, Docker
where a Docker engine did; host networking, so everything stays on loopback.

`start_hook_server_from_image` runs the hook server the way the install's Deployment runs it: its
command (with the bind address replaced), its env (the images ConfigMap, the literal values and the
ConfigMap keys given here), its user and group, a read-only root filesystem, no capabilities, no
privilege escalation, /tmp as a memory emptyDir, and the TLS Secret mounted read-only with the Secret
volume's mode and the pod's fsGroup.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOYMENT = REPO / "metacontroller" / "hooks" / "deployment.yaml"
IMAGES_ENV = REPO / "metacontroller" / "hooks" / "images.env"
AKS_ENV = REPO / "metacontroller" / "aks.env"
PODMAN_PROCESSES = 32768


class ContainerError(RuntimeError):
    pass


def container_tool() -> str | None:
    """The tool that runs what release.build_images built here (None: neither can)."""
    from release.container_engine import Engine, EngineError

    try:
        builder = Engine.detect().builder
    except EngineError:
        return None
    if builder == "docker":
        return "docker"
    return "podman" if shutil.which("podman") else None


def built(name: str, registry_host: str | None = None) -> str:
    """Build image `name` as `make images` does (this machine's pip settings as build secrets; cached layers
    make a rebuild quick). With `registry_host` it is tagged for and pushed to that registry; without, it
    keeps the loopback registry's name `make images` gives it."""
    from release import build_images
    from release.container_engine import Engine
    from release.images import image_named, project_version

    engine = Engine.detect()
    registry = f"{registry_host}/kaito-sglang" if registry_host else build_images.LOCAL_REGISTRY
    with tempfile.TemporaryDirectory(prefix="kaito-pip-secrets-") as tmp:
        secrets = build_images.write_secrets(build_images.machine_pip_settings(), Path(tmp))
        done = build_images.build(engine, image_named(name), project_version(), registry, secrets)
    if registry_host:
        engine.push(done.reference, done.reference)
    return done.reference


def untag(reference: str) -> None:
    from release.container_engine import Engine

    Engine.detect().remove(reference)


@dataclass
class ContainerSpec:
    command: list[str]
    env: dict[str, str]
    entrypoint: str | None = None  # replaces the image's ENTRYPOINT (a pod's `command` does)
    user: str | None = None
    read_only: bool = False
    drop_all_capabilities: bool = False
    no_new_privileges: bool = False
    tmpfs: list[tuple[str, str]] = field(default_factory=list)  # (mount path, size)
    binds: list[tuple[str, str, bool]] = field(default_factory=list)  # (host path, mount path, read-only)


def env_file(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def filled_aks_settings(path: Path = AKS_ENV) -> dict[str, str]:
    """ConfigMap kaito-hooks-aks as the install makes it from aks.env, filled in with test values (a zero
    GUID for ids); ARM_ENDPOINT stays empty, as the README leaves it for Azure public."""
    settings = env_file(path)
    for key, value in settings.items():
        if not value and key != "ARM_ENDPOINT":
            settings[key] = "00000000-0000-0000-0000-000000000000" if key.endswith("_ID") else f"test-{key.lower()}"
    return settings


def hook_container_spec(
    deployment: dict,
    bind: str,
    settings: Mapping[str, str],
    images_env: Mapping[str, str],
    secret_dirs: Mapping[str, str],
) -> ContainerSpec:
    """The hook Deployment's container as a local container: `settings` are the values of its ConfigMap
    keys and anything the caller adds or overrides; `secret_dirs` maps each Secret volume to a host folder."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = list(container["command"])
    command[command.index("--bind") + 1] = bind
    env = dict(images_env)
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["configMapKeyRef"]
        if ref["key"] in settings:
            env[entry["name"]] = settings[ref["key"]]
        elif not ref.get("optional"):
            raise ValueError(f"env {entry['name']} needs ConfigMap {ref['name']} key {ref['key']}: pass it in settings")
    env.update(settings)
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    user = (
        f"{context['runAsUser']}:{context.get('runAsGroup', context['runAsUser'])}" if "runAsUser" in context else None
    )
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    spec = ContainerSpec(
        command=command,
        env=env,
        user=user,
        read_only=bool(context.get("readOnlyRootFilesystem")),
        drop_all_capabilities="ALL" in context.get("capabilities", {}).get("drop", []),
        no_new_privileges=context.get("allowPrivilegeEscalation") is False,
    )
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            spec.tmpfs.append((mount["mountPath"], volume["emptyDir"].get("sizeLimit", "64Mi")))
        elif "secret" in volume:
            if mount["name"] not in secret_dirs:
                raise ValueError(
                    f"volume {mount['name']} (Secret {volume['secret']['secretName']}) needs a host folder"
                )
            spec.binds.append((secret_dirs[mount["name"]], mount["mountPath"], bool(mount.get("readOnly"))))
        else:
            raise ValueError(f"volume {mount['name']}: only emptyDir and Secret volumes can be run locally")
    return spec


def _size(limit: str) -> str:
    """Kubernetes quantity (16Mi) as a mount size (16m)."""
    units = {"Ki": "k", "Mi": "m", "Gi": "g"}
    return next((limit[: -len(u)] + s for u, s in units.items() if limit.endswith(u)), limit)


def run_argv(tool: str, image: str, spec: ContainerSpec, name: str) -> list[str]:
    """`podman/docker run -d` for `spec` on the host's network."""
    argv = [tool]
    if tool == "podman" and shutil.which("runc"):
        # crun refuses hybrid cgroup hierarchies (this machine's); runc runs there and everywhere else.
        argv += ["--runtime", "runc"]
    argv += ["run", "-d", "--name", name, "--pull", "never", "--network", "host"]
    if tool == "podman":
        # podman's default limits (1M open files) can be above a machine's hard limits, which root may not
        # raise without CAP_SYS_RESOURCE; ask for what this process has (podman itself caps processes at
        # PODMAN_PROCESSES for the runtime it starts).
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], PODMAN_PROCESSES)
        argv += ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]
    if spec.entrypoint:
        argv += ["--entrypoint", spec.entrypoint]
    if spec.user:
        argv += ["--user", spec.user]
    if spec.read_only:
        argv.append("--read-only")
    if spec.drop_all_capabilities:
        argv += ["--cap-drop", "ALL"]
    if spec.no_new_privileges:
        argv += ["--security-opt", "no-new-privileges"]
    for path, size in spec.tmpfs:
        argv += ["--tmpfs", f"{path}:rw,size={_size(size)},mode=1777"]
    for host, target, read_only in spec.binds:
        argv += ["-v", f"{host}:{target}:{'ro' if read_only else 'rw'}"]
    for key, value in sorted(spec.env.items()):
        argv += ["-e", f"{key}={value}"]
    return [*argv, image, *spec.command]


@dataclass(frozen=True)
class HostProcess:
    pid: int


class Container:
    """A detached container; `stop()` removes it."""

    def __init__(self, tool: str, argv: list[str], name: str, cleanup: list[Path] | None = None):
        self.tool, self.name, self.cleanup = tool, name, cleanup or []
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if out.returncode:
            # A failed start can leave the container created (and its image in use): remove it.
            subprocess.run([tool, "rm", "-f", name], capture_output=True, check=False)
            self._remove_files()
            raise ContainerError(f"{tool} run failed (exit {out.returncode}): {out.stderr.strip()[-2000:]}")

    def running(self) -> bool:
        out = subprocess.run(
            [self.tool, "inspect", "--format", "{{.State.Running}}", self.name],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip() == "true"

    @property
    def proc(self) -> HostProcess:
        """The container's first process as the host sees it (signals to its process group reach the server
        and its workers, as for a server started as a local process)."""
        out = subprocess.run(
            [self.tool, "inspect", "--format", "{{.State.Pid}}", self.name], capture_output=True, text=True, check=False
        )
        if out.returncode or not out.stdout.strip().isdigit() or int(out.stdout) == 0:
            raise ContainerError(f"container {self.name} is not running: {out.stderr.strip()}")
        return HostProcess(int(out.stdout))

    def logs(self) -> str:
        out = subprocess.run([self.tool, "logs", self.name], capture_output=True, text=True, check=False)
        return out.stdout + out.stderr

    def exec(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.tool, "exec", self.name, *argv], capture_output=True, text=True, check=False)

    def wait(self, timeout: float) -> int:
        """The exit status once the container has stopped."""
        out = subprocess.run(
            [self.tool, "wait", self.name], capture_output=True, text=True, timeout=timeout, check=False
        )
        if out.returncode:
            raise ContainerError(f"{self.tool} wait {self.name}: {out.stderr.strip()}")
        return int(out.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        for _ in range(3):  # a container still stopping can refuse removal once: try again
            subprocess.run([self.tool, "rm", "-f", "-t", "5", self.name], capture_output=True, check=False)
            gone = subprocess.run([self.tool, "inspect", self.name], capture_output=True, check=False).returncode
            if gone:
                break
            time.sleep(2)
        self._remove_files()

    def _remove_files(self) -> None:
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)


def secret_volume(files: Mapping[str, Path], mode: int, group: int) -> Path:
    """A folder as the kubelet mounts a Secret volume: the files with the volume's defaultMode, owned by
    root and the pod's fsGroup."""
    folder = Path(tempfile.mkdtemp(prefix="kaito-secret-"))
    folder.chmod(0o755)
    for key, source in files.items():
        target = folder / key
        shutil.copyfile(source, target)
        try:
            os.chown(target, 0, group)
            target.chmod(mode)
        except PermissionError:  # not root (a CI runner's user): readable by everyone instead of by the group
            target.chmod(0o444)
    return folder


class HookServerContainer(Container):
    url: str
    ca: Path


def start_hook_server_from_image(
    image: str,
    tls_dir: Path,
    bind: str,
    env: Mapping[str, str],
    images_env: Mapping[str, str] | None = None,
    deployment: dict | None = None,
    timeout: float = 60,
) -> HookServerContainer:
    """The hook server from `image`, as the install's Deployment runs it, serving on `bind` (host:port on
    loopback) with the server certificate in `tls_dir` (tls.crt, tls.key, ca.crt as `python -m hooks certs
    --out-dir` writes them). `env`: the ConfigMap keys and any other setting; host files that a setting
    names are mounted read-only at the same path. `deployment`: the hook Deployment as rendered for the mode
    (default: metacontroller/hooks/deployment.yaml, the AKS one). Returns once /healthz answers over HTTPS."""
    import requests

    tool = container_tool()
    if tool is None:
        raise ContainerError("no container tool: install buildah, podman and runc (or start Docker)")
    deployment = deployment or yaml.safe_load(DEPLOYMENT.read_text())
    pod = deployment["spec"]["template"]["spec"]
    tls_volume = next(v for v in pod["volumes"] if v["name"] == "tls")
    secret = secret_volume(
        {key: tls_dir / key for key in ("tls.crt", "tls.key", "ca.crt")},
        tls_volume["secret"].get("defaultMode", 0o644),
        pod["securityContext"]["fsGroup"],
    )
    spec = hook_container_spec(
        deployment, bind, env, env_file(IMAGES_ENV) if images_env is None else images_env, {"tls": str(secret)}
    )
    for value in env.values():
        if value.startswith("/") and Path(value).is_file():
            spec.binds.append((value, value, True))
    name = f"kaito-hooks-{uuid.uuid4().hex[:8]}"
    container = HookServerContainer(tool, run_argv(tool, image, spec, name), name, cleanup=[secret])
    host, port = bind.rsplit(":", 1)
    container.url = f"https://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    container.ca = tls_dir / "ca.crt"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(container.url + "/healthz", timeout=2, verify=str(container.ca)).ok:
                return container
        except requests.RequestException:
            pass
        if not container.running() or time.monotonic() > deadline:
            logs = container.logs()
            container.stop()
            raise ContainerError(f"the hook server container did not answer /healthz:\n{logs[-3000:]}")
        time.sleep(0.3)


class ImageHookServer:
    """The hook server as a container of the built hooks image, with the interface of the cluster tests'
    process-based HookServer: `url`, `start()`, `kill()` (hard, as a node failure) and `stop()`."""

    def __init__(
        self,
        image: str,
        env: Mapping[str, str],
        tls_dir: Path,
        port: int,
        deployment: dict | None = None,
        images_env: Mapping[str, str] | None = None,
    ):
        self.image, self.env, self.tls_dir, self.port = image, dict(env), tls_dir, port
        self.deployment, self.images_env = deployment, images_env
        self.url = f"https://127.0.0.1:{port}"
        self.container: HookServerContainer | None = None
        self.start()

    def start(self) -> None:
        self.container = start_hook_server_from_image(
            self.image,
            self.tls_dir,
            f"127.0.0.1:{self.port}",
            self.env,
            images_env=self.images_env,
            deployment=self.deployment,
        )

    @property
    def process(self) -> HookServerContainer | None:
        """The running container (stop() removes it), where the process-based HookServer has its process."""
        return self.container

    def kill(self) -> None:
        assert self.container is not None
        subprocess.run(
            [self.container.tool, "kill", "-s", "KILL", self.container.name], capture_output=True, check=False
        )
        self.container.stop()
        self.container = None

    def stop(self) -> None:
        if self.container is not None:
            self.container.stop()
            self.container = None


def pushed_images_env(registry: str | None = None) -> dict[str, str]:
    """The KAITO_*_IMAGE settings naming the images `make images` pushed (loopback registry, pyproject's
    version): what the install's images.env names, for a cluster whose images come from this checkout."""
    from release import build_images
    from release.images import IMAGES, image_ref, project_version

    version = project_version()
    return {
        image.env: image_ref(image.name, version, registry or build_images.LOCAL_REGISTRY)
        for image in IMAGES
        if image.env
    }


def in_registry(reference: str) -> bool:
    """Whether a loopback (plain HTTP) registry serves `reference`."""
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{reference}"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return out.returncode == 0
