"""The loopback OCI registry `make images` pushes to: Debian's `docker-registry` (distribution 2.8), the
same server the registry tests run, with its storage kept across runs.

    python -m release.local_registry start|stop|status

It stays up after `make images` so the images can be read (`skopeo inspect --tls-verify=false
docker://127.0.0.1:5050/kaito-sglang/hooks:<version>`); `stop` ends it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ADDRESS = os.environ.get("KAITO_IMAGES_REGISTRY_ADDRESS", "127.0.0.1:5050")
STATE = Path(os.environ.get("KAITO_IMAGES_CACHE", Path.home() / ".cache" / "kaito-sglang" / "images")) / "registry"


def config_text(address: str, storage: Path) -> str:
    return "\n".join(
        [
            "version: 0.1",
            "log:",
            "  level: warn",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {storage}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {address}",
            "",
        ]
    )


def answers(address: str = ADDRESS) -> bool:
    try:
        urllib.request.urlopen(f"http://{address}/v2/", timeout=2)
        return True
    except urllib.error.HTTPError:
        return True  # up, asking for credentials: not ours, but something answers there
    except OSError:
        return False


def start(address: str = ADDRESS, state: Path = STATE) -> str:
    """Start the registry in the background unless one answers at `address` already; returns the address."""
    if answers(address):
        return address
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if not binary:
        raise RuntimeError("docker-registry is not installed (apt-get install docker-registry; make system-packages)")
    state.mkdir(parents=True, exist_ok=True)
    config = state / "config.yml"
    config.write_text(config_text(address, state / "storage"))
    with (state / "registry.log").open("a") as log:
        process = subprocess.Popen(
            [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    (state / "pid").write_text(str(process.pid))
    deadline = time.monotonic() + 20
    while not answers(address):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"docker-registry did not start on {address}: see {state / 'registry.log'}")
        time.sleep(0.1)
    return address


def stop(state: Path = STATE) -> bool:
    pid_file = state / "pid"
    if not pid_file.exists():
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    pid_file.unlink()
    return True


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "start":
        print(f"registry on http://{start()}")
    elif command == "stop":
        print("stopped" if stop() else "not started by release.local_registry")
    elif command == "status":
        print(f"{ADDRESS}: {'answers' if answers() else 'nothing answers'}")
    else:
        print("usage: python -m release.local_registry start|stop|status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
