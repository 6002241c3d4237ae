"""This machine's pip settings (a private CA, a private index) as build secrets, and what to look for
to prove that none of them ended up in an image layer.

A build reaches PyPI through whatever this machine uses: its `pip config list` (pip's files and PIP_*
variables) names the CA bundle and the index. They go into the build as two secrets that the
Dockerfiles' pip steps mount for that one step (`RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf`
and `id=pip-ca`), so no layer keeps them. Without such settings (a GitHub runner) no secret is passed and
the mounts are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Where the pip-ca secret appears during a build step; the pip.conf secret names it.
CA_TARGET = "/run/secrets/pip-ca"
CARRIED = ("cert", "index-url", "extra-index-url", "trusted-host")
_CONFIG_LINE = re.compile(r"^(?P<scope>[\w:.-]*)\.(?P<key>[\w-]+)='(?P<value>.*)'$")
# Index settings that name the public index are not secrets (pip's own code spells them out).
PUBLIC_INDEX_HOSTS = ("pypi.org", "pypi.python.org", "files.pythonhosted.org")
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.DOTALL)


@dataclass(frozen=True)
class PipSettings:
    cert: str | None  # the CA bundle pip verifies the index with
    options: tuple[tuple[str, str], ...]  # index-url, extra-index-url, trusted-host as pip.conf lines

    @property
    def empty(self) -> bool:
        return self.cert is None and not self.options


def parse_config_list(text: str) -> PipSettings:
    """The settings a build needs from `pip config list` output (`global.cert='...'`, `:env:.index-url='...'`).

    Later lines win, and the environment (`:env:`) wins over files, as for pip itself."""
    found: dict[str, str] = {}
    from_env: dict[str, str] = {}
    for line in text.splitlines():
        match = _CONFIG_LINE.match(line.strip())
        if not match or match["key"] not in CARRIED:
            continue
        (from_env if match["scope"] == ":env:" else found)[match["key"]] = match["value"]
    found.update(from_env)
    cert = found.pop("cert", None)
    return PipSettings(cert=cert, options=tuple(sorted(found.items())))


def pip_conf_text(settings: PipSettings) -> str:
    """The pip.conf a build step sees: the CA at the secret's mount point, the index settings as they are."""
    lines = ["[global]"]
    if settings.cert:
        lines.append(f"cert = {CA_TARGET}")
    lines += [f"{key} = {value}" for key, value in settings.options]
    return "\n".join(lines) + "\n"


def write_secrets(settings: PipSettings, directory: Path) -> list[tuple[str, Path]]:
    """(secret id, source file) pairs for the build; the pip.conf is written to `directory` (mode 0600)."""
    if settings.empty:
        return []
    conf = directory / "pip.conf"
    conf.write_text(pip_conf_text(settings))
    conf.chmod(0o600)
    secrets = [("pip.conf", conf)]
    if settings.cert:
        secrets.append(("pip-ca", Path(settings.cert)))
    return secrets


def certificate_bodies(pem_text: str) -> list[str]:
    """The base64 bodies of the PEM certificates in a bundle, whitespace removed."""
    return ["".join(body.split()) for body in _PEM.findall(pem_text)]


def private_certificates(bundle_text: str, public_bundle_text: str) -> list[str]:
    """Certificates of this machine's bundle that are not in the public (Mozilla) bundle: the ones only this
    machine trusts, which must not leak into an image."""
    public = set(certificate_bodies(public_bundle_text))
    return [body for body in certificate_bodies(bundle_text) if body not in public]


def needles(settings: PipSettings, bundle_text: str, public_bundle_text: str) -> dict[str, bytes]:
    """What a layer must not contain, named: a line of each private CA certificate (PEM wraps at 64 columns,
    so the second line of its body appears verbatim in any file that holds it), and each index setting."""
    found: dict[str, bytes] = {}
    for number, body in enumerate(private_certificates(bundle_text, public_bundle_text), 1):
        if len(body) >= 128:
            found[f"private CA certificate {number}"] = body[64:128].encode()
    for key, value in settings.options:
        if not any(host in value for host in PUBLIC_INDEX_HOSTS):
            found[f"pip {key}"] = value.encode()
    if not settings.empty:
        found["the build's pip.conf"] = pip_conf_text(settings).encode()
    return found
