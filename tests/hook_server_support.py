"""The hook server as a subprocess on a loopback port (`python -m hooks serve`, or gunicorn with a test app).

One way to start it, wait for it and stop it, shared by the HTTP, TLS and Machine tests and the hook server
benchmark, so they all exercise the same command line and environment."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import requests

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"


def hooks_env(**extra: str) -> dict[str, str]:
    """The caller's environment without Azure, ARM or hook settings, with the product and test helpers importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ARM_", "FAKE_ARM", "KAITO_HOOKS"))}
    env.update(extra, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]))
    return env


def serve_argv(port: int, workers: int = 1, threads: int | None = None, tls_dir: Path | None = None) -> list[str]:
    """`python -m hooks serve` on 127.0.0.1:port, as the Deployment runs it."""
    argv = [sys.executable, "-m", "hooks", "serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if tls_dir is not None:
        argv += ["--tls-dir", str(tls_dir)]
    return argv


def run_hooks_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """`python -m hooks ARGS` in the hook server's environment, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "hooks", *args],
        cwd=REPO,
        env=hooks_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def make_certs(directory: Path) -> Path:
    """The CA, server and Metacontroller client certificates from `python -m hooks certs`, valid for 127.0.0.1."""
    subprocess.run(
        [sys.executable, "-m", "hooks", "certs", "--out-dir", str(directory), "--extra-name", "127.0.0.1"],
        cwd=REPO,
        check=True,
        env=hooks_env(),
    )
    return directory


class HookServer:
    """A started server: `url`, `post()`, `stop()`. It is up once GET /healthz answers 200."""

    def __init__(
        self,
        argv: list[str],
        url: str,
        env: dict[str, str],
        verify: str | None = None,
        cert: tuple[str, str] | None = None,
        log_path: Path | None = None,
        start_within_s: float = 30,
    ):
        self.url, self.verify, self.cert = url, verify, cert
        self._log: IO[str] = open(log_path, "w+") if log_path else tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + start_within_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("hook server exited:\n" + self.output())
            try:
                if requests.get(url + "/healthz", timeout=2, verify=verify or False).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or a worker still booting (read timeout)
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"hook server did not start in {start_within_s:g} s:\n" + self.output())
            time.sleep(0.2)

    def output(self) -> str:
        """What the server has written to stdout and stderr so far."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def post(
        self,
        path: str,
        body: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        cert: Any = "default",
        timeout: float = 15,
    ) -> requests.Response:
        """POST `body` as JSON, or `data` as given; with the server's client certificate unless `cert` says otherwise."""
        return requests.post(
            self.url + path,
            json=body if data is None else None,
            data=data,
            headers=headers,
            timeout=timeout,
            verify=self.verify,
            cert=self.cert if cert == "default" else cert,
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def serve_tls(argv: list[str], port: int, certs: Path, env: dict[str, str]) -> HookServer:
    """A server with TLS from `certs` (make_certs), called with Metacontroller's client certificate by default."""
    return HookServer(
        argv,
        f"https://127.0.0.1:{port}",
        env,
        verify=str(certs / "ca.crt"),
        cert=(str(certs / "client.crt"), str(certs / "client.key")),
    )
