"""A real OCI registry (Debian's `docker-registry`, distribution 2.8) on loopback for the push tests.

Three modes: anonymous, htpasswd Basic auth, and Bearer-token auth with a small token server written
here (the same flow ACR and Docker Hub use: 401 + `Bearer realm=...` challenge, token from the realm with
Basic credentials, JWT signed by a key whose certificate the registry trusts).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from loopback_support import free_port

REGISTRY_BIN = shutil.which("docker-registry") or shutil.which("registry")
SKOPEO_BIN = shutil.which("skopeo")
HTPASSWD_BIN = shutil.which("htpasswd")
SERVICE = "kaito-test-registry"
ISSUER = "kaito-test-issuer"


def bcrypt_line(user: str, password: str) -> str:
    if HTPASSWD_BIN:
        out = subprocess.run([HTPASSWD_BIN, "-Bbn", user, password], check=True, capture_output=True, text=True)
        return out.stdout.strip()
    import bcrypt  # optional fallback when apache2-utils is absent

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """Self-signed RSA certificate + RS256 JWTs in the shape distribution's token auth verifies."""

    def __init__(self, directory: str):
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.cert_path = os.path.join(directory, "token-cert.pem")
        with open(self.cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))

    def token(self, subject: str, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for scope in scopes:
            kind, name, actions = parse_scope(scope)
            access.append({"type": kind, "name": name, "actions": actions})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(sig)}"


def parse_scope(scope: str) -> tuple[str, str, list[str]]:
    """`repository:team/adapters:pull,push` -> ("repository", "team/adapters", ["pull", "push"])."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return kind, name, [a for a in actions.split(",") if a]


def _token_server(issuer: TokenIssuer, user: str, password: str, requests_seen: list):
    from urllib.parse import parse_qs, urlsplit

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            query = parse_qs(urlsplit(self.path).query)
            expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            ok = self.headers.get("Authorization") == expected and query.get("service") == [SERVICE]
            requests_seen.append({"authorized": ok, "scope": query.get("scope", [])})
            if not ok:
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"token": issuer.token(user, query.get("scope", []))}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@contextlib.contextmanager
def running_registry(directory: str, auth: str | None = None, user: str = "alice", password: str = "s3cret-pw"):
    """Yield a dict(host=..., token_requests=[...]) for a registry on 127.0.0.1 with `auth` None|'basic'|'token'."""
    port = free_port()
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {directory}/storage",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "  secret: test-only-secret",
    ]
    token_srv = None
    seen: list = []
    if auth == "basic":
        with open(os.path.join(directory, "htpasswd"), "w") as f:
            f.write(bcrypt_line(user, password) + "\n")
        lines += ["auth:", "  htpasswd:", "    realm: kaito-test", f"    path: {directory}/htpasswd"]
    elif auth == "token":
        issuer = TokenIssuer(directory)
        token_srv = _token_server(issuer, user, password, seen)
        lines += [
            "auth:",
            "  token:",
            f"    realm: http://127.0.0.1:{token_srv.server_address[1]}/token",
            f"    service: {SERVICE}",
            f"    issuer: {ISSUER}",
            f"    rootcertbundle: {issuer.cert_path}",
        ]
    config = os.path.join(directory, "config.yml")
    with open(config, "w") as f:
        f.write("\n".join(lines) + "\n")
    log = open(os.path.join(directory, "registry.log"), "w")  # noqa: SIM115 - the registry writes it until the finally closes it
    proc = subprocess.Popen(
        [installed(REGISTRY_BIN, "registry"), "serve", config], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.time() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # 401: up and asking for auth
            except OSError as err:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("docker-registry did not start: " + Path(log.name).read_text()[-2000:]) from err
                time.sleep(0.1)
        yield {"host": f"127.0.0.1:{port}", "token_requests": seen, "user": user, "password": password}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if token_srv:
            token_srv.shutdown()
            token_srv.server_close()


def skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [installed(SKOPEO_BIN, "skopeo"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def installed(path: str | None, name: str) -> str:
    """The tool's path; the tests that need it skip where it is absent, so None here is a test bug."""
    if path is None:
        raise RuntimeError(f"{name} is not installed")
    return path
