"""The image builder this machine has: Docker with BuildKit where a Docker engine answers, otherwise buildah
(no daemon: it builds as root in a chroot, with the host's network). The command lines are pure functions;
`Engine` runs them.

buildah's images live in containers-storage, where podman runs them; Docker's in its engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

BUILDERS = ("docker", "buildah")


class EngineError(RuntimeError):
    pass


def build_argv(
    builder: str,
    dockerfile: str,
    target: str | None,
    context: str,
    tag: str,
    build_args: Mapping[str, str],
    secrets: Sequence[tuple[str, Path]],
) -> list[str]:
    """One image build. Both builders get the same Dockerfile, target, context, build args and secrets;
    buildah caches layers (`--layers`) as BuildKit does by default and runs steps in a chroot."""
    if builder == "docker":
        argv = ["docker", "buildx", "build", "--load", "--network", "host"]
    elif builder == "buildah":
        argv = ["buildah", "bud", "--layers", "--force-rm", "--isolation", "chroot", "--network", "host"]
    else:
        raise EngineError(f"builder {builder!r} is not one of {', '.join(BUILDERS)} (KAITO_IMAGE_BUILDER)")
    argv += ["-f", dockerfile, "-t", tag]
    if target:
        argv += ["--target", target]
    for key, value in sorted(build_args.items()):
        argv += ["--build-arg", f"{key}={value}"]
    for secret_id, source in secrets:
        argv += ["--secret", f"id={secret_id},src={source}"]
    return [*argv, context]


def pick_builder(env: Mapping[str, str], docker_answers: bool, buildah_present: bool) -> str:
    """KAITO_IMAGE_BUILDER if set; else Docker when its engine answers; else buildah."""
    chosen = env.get("KAITO_IMAGE_BUILDER", "")
    if chosen:
        if chosen not in BUILDERS:
            raise EngineError(f"KAITO_IMAGE_BUILDER={chosen!r}: use one of {', '.join(BUILDERS)}")
        return chosen
    if docker_answers:
        return "docker"
    if buildah_present:
        return "buildah"
    raise EngineError(
        "no image builder: no Docker engine answers and buildah is not installed "
        "(apt-get install buildah podman runc mmdebstrap, or start Docker)"
    )


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], check=False, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass(frozen=True)
class Engine:
    builder: str  # "docker" or "buildah"

    @classmethod
    def detect(cls, env: Mapping[str, str] = os.environ) -> Engine:
        return cls(pick_builder(env, _docker_answers(), shutil.which("buildah") is not None))

    def run(self, argv: list[str], cwd: Path | None = None, quiet: bool = False) -> subprocess.CompletedProcess:
        out = subprocess.run(argv, check=False, cwd=cwd, text=True, capture_output=quiet)
        if out.returncode:
            tail = (out.stdout or "")[-3000:] + (out.stderr or "")[-3000:] if quiet else ""
            raise EngineError(f"{' '.join(argv[:3])} ... failed (exit {out.returncode}){': ' + tail if tail else ''}")
        return out

    def exists(self, ref: str) -> bool:
        argv = (
            ["docker", "image", "inspect", ref]
            if self.builder == "docker"
            else ["buildah", "inspect", "--type", "image", ref]
        )
        return subprocess.run(argv, check=False, capture_output=True).returncode == 0

    def size_bytes(self, ref: str) -> int:
        """The image's unpacked size, as the engine counts it."""
        tool = "docker" if self.builder == "docker" else "podman"
        out = self.run([tool, "image", "inspect", "--format", "{{.Size}}", ref], quiet=True)
        return int(out.stdout.strip())

    def import_rootfs(self, tarball: Path, ref: str, env: Sequence[str], cmd: Sequence[str]) -> None:
        """An image whose one layer is the root filesystem in `tarball`."""
        if self.builder == "docker":
            changes = [f"ENV {e}" for e in env] + ["CMD " + _json_list(cmd)]
            argv = ["docker", "import"]
            for change in changes:
                argv += ["--change", change]
            self.run([*argv, str(tarball), ref], quiet=True)
            return
        container = self.run(["buildah", "from", "scratch"], quiet=True).stdout.strip()
        try:
            self.run(["buildah", "add", container, str(tarball), "/"], quiet=True)
            config = ["buildah", "config"]
            for e in env:
                config += ["--env", e]
            self.run([*config, "--cmd", _json_list(cmd), container], quiet=True)
            self.run(["buildah", "commit", "--rm", container, ref], quiet=True)
        except EngineError:
            subprocess.run(["buildah", "rm", container], check=False, capture_output=True)
            raise

    def push(self, ref: str, destination: str) -> None:
        """Push to a registry on loopback (plain HTTP)."""
        if self.builder == "docker":
            self.run(["docker", "tag", ref, destination], quiet=True)
            self.run(["docker", "push", destination], quiet=True)
        else:
            self.run(["buildah", "push", "--tls-verify=false", ref, f"docker://{destination}"], quiet=True)

    def remove(self, ref: str) -> None:
        tool = "docker" if self.builder == "docker" else "buildah"
        subprocess.run([tool, "rmi", ref], check=False, capture_output=True)


def _json_list(items: Sequence[str]) -> str:
    import json

    return json.dumps(list(items))
