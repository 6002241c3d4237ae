"""The webhook client: where a hook is, how to authenticate, and one POST with Metacontroller's rules.

Resolution (``resolve``) happens when a controller object is loaded: the URL (``url`` wins over
``service`` + ``path``), the timeout (Go duration, default 10s, <= 0 means 10s), and the connection
settings: a webhook's own ``authorization``/``basicAuth``/``caBundle``/``clientTLS`` win over those
of the ``endpointConfigs`` entry whose ``host`` matches the URL's host or host:port.
"""

from __future__ import annotations

import base64
import email.utils
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

DEFAULT_TIMEOUT_S = 10.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class WebhookConfigError(ValueError):
    """A hook definition Metacontroller cannot use (the controller does not start)."""


class HookCallError(RuntimeError):
    """The call failed: not 200, timeout, connection refused (the object is retried with backoff)."""


class HookRetryLater(RuntimeError):
    """HTTP 429: retry after ``delay_s`` seconds, without an error."""

    def __init__(self, delay_s: float, message: str):
        super().__init__(message)
        self.delay_s = delay_s


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string such as ``10s``, ``1m30s``, ``500ms``."""
    text = text.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if not match:
            raise WebhookConfigError(f"timeout {text!r} is not a Go duration (e.g. 10s, 1m30s, 500ms)")
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if not body:
        raise WebhookConfigError("timeout is empty")
    return sign * total


def hook_url(webhook: Mapping[str, Any]) -> str:
    url = webhook.get("url")
    if url:
        return url
    service = webhook.get("service")
    if isinstance(service, Mapping) and service.get("name") and service.get("namespace"):
        protocol = service.get("protocol") or "http"
        port = service.get("port") or 80
        return f"{protocol}://{service['name']}.{service['namespace']}:{port}{webhook.get('path') or ''}"
    raise WebhookConfigError("webhook needs url, or service (name, namespace) and path")


def retry_after_seconds(header: str | None, now: float | None = None) -> float:
    """A Retry-After header (seconds or an HTTP date) as a delay; 0 if absent or unreadable."""
    if not header:
        return 0.0
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when - (time.time() if now is None else now))


@dataclass(frozen=True)
class Connection:
    """Everything one POST needs. ``verify``/``cert`` as the requests library takes them."""

    url: str
    timeout_s: float
    headers: dict[str, str] = field(default_factory=dict)
    verify: bool | str = True
    cert: tuple[str, str] | None = None


SecretReader = Callable[[str, str], Mapping[str, bytes]]
ConfigMapReader = Callable[[str, str], Mapping[str, str]]


def _secret_value(read_secret: SecretReader, ref: Mapping[str, Any], key: str, where: str) -> bytes:
    try:
        data = read_secret(ref["namespace"], ref["name"])
    except LookupError as err:
        raise WebhookConfigError(f"{where}: {err}") from None
    if key not in data:
        raise WebhookConfigError(f"{where}: Secret {ref['namespace']}/{ref['name']} has no key {key!r}")
    return data[key]


def auth_headers(settings: Mapping[str, Any], read_secret: SecretReader) -> dict[str, str]:
    authorization = settings.get("authorization")
    basic = settings.get("basicAuth")
    if authorization is not None and basic is not None:
        raise WebhookConfigError("authorization and basicAuth are mutually exclusive")
    if authorization:
        scheme = authorization.get("type") or "Bearer"
        if scheme.lower() == "basic":
            raise WebhookConfigError('authorization.type "Basic" is not supported; use basicAuth')
        ref = authorization["secretRef"]
        token = _secret_value(read_secret, ref, ref["key"], "authorization.secretRef").decode().strip()
        return {"Authorization": f"{scheme} {token}"}
    if basic:
        ref = basic["secretRef"]
        user = _secret_value(read_secret, ref, basic.get("usernameKey") or "username", "basicAuth.secretRef")
        password = _secret_value(read_secret, ref, basic.get("passwordKey") or "password", "basicAuth.secretRef")
        return {"Authorization": "Basic " + base64.b64encode(user + b":" + password).decode()}
    return {}


def _write(directory: str, name: str, data: bytes) -> str:
    path = os.path.join(directory, name)
    with open(path, "wb") as out:
        out.write(data)
    return path


def matching_endpoint(url: str, endpoint_configs: list[Mapping[str, Any]] | None) -> Mapping[str, Any]:
    parts = urlsplit(url)
    host_port = parts.netloc.rsplit("@", 1)[-1]
    for entry in endpoint_configs or []:
        if entry.get("host") in (host_port, parts.hostname):
            return entry
    return {}


def resolve(
    webhook: Mapping[str, Any],
    endpoint_configs: list[Mapping[str, Any]] | None,
    read_secret: SecretReader,
    read_configmap: ConfigMapReader,
) -> Connection:
    url = hook_url(webhook)
    timeout_s = DEFAULT_TIMEOUT_S
    if webhook.get("timeout"):
        timeout_s = parse_duration(webhook["timeout"])
        if timeout_s <= 0:
            timeout_s = DEFAULT_TIMEOUT_S
    endpoint = matching_endpoint(url, endpoint_configs)
    auth_source = webhook if (webhook.get("authorization") or webhook.get("basicAuth")) else endpoint
    headers = auth_headers(auth_source, read_secret)
    files = tempfile.mkdtemp(prefix="standin-mc-tls-")
    verify: bool | str = True
    ca = webhook.get("caBundle") or endpoint.get("caBundle")
    if ca:
        sources = [k for k in ("inline", "secretRef", "configMapRef") if ca.get(k)]
        if len(sources) != 1:
            raise WebhookConfigError("caBundle needs exactly one of inline, secretRef, configMapRef")
        if ca.get("inline"):
            pem = ca["inline"].encode()
        elif ca.get("secretRef"):
            ref = ca["secretRef"]
            pem = _secret_value(read_secret, ref, ref.get("key") or "ca.crt", "caBundle.secretRef")
        else:
            ref = ca["configMapRef"]
            try:
                data = read_configmap(ref["namespace"], ref["name"])
            except LookupError as err:
                raise WebhookConfigError(f"caBundle.configMapRef: {err}") from None
            key = ref.get("key") or "ca.crt"
            if key not in data:
                raise WebhookConfigError(f"caBundle.configMapRef: ConfigMap has no key {key!r}")
            pem = data[key].encode()
        verify = _write(files, "ca.crt", pem)
    cert = None
    client_tls = webhook.get("clientTLS") or endpoint.get("clientTLS")
    if client_tls:
        ref = client_tls["secretRef"]
        crt = _secret_value(read_secret, ref, client_tls.get("certKey") or "tls.crt", "clientTLS.secretRef")
        key = _secret_value(read_secret, ref, client_tls.get("privateKeyKey") or "tls.key", "clientTLS.secretRef")
        cert = (_write(files, "tls.crt", crt), _write(files, "tls.key", key))
    return Connection(url=url, timeout_s=timeout_s, headers=headers, verify=verify, cert=cert)


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def proxies_for(url: str) -> dict[str, None]:
    """No HTTP(S)_PROXY for loopback hooks, as Go's ProxyFromEnvironment (None overrides the environment)."""
    if urlsplit(url).hostname in LOOPBACK_HOSTS:
        return {"http": None, "https": None}
    return {}


def post(connection: Connection, body: Mapping[str, Any], session: requests.Session | None = None) -> bytes:
    """POST the request; the answer's body on HTTP 200, else HookRetryLater (429) or HookCallError."""
    http = session or requests
    headers = {"Content-Type": "application/json", **connection.headers}
    try:
        response = http.post(
            connection.url,
            data=json.dumps(body),
            headers=headers,
            timeout=connection.timeout_s,
            verify=connection.verify,
            cert=connection.cert,
            proxies=proxies_for(connection.url),
        )
    except requests.Timeout:
        raise HookCallError(f"Post {connection.url!r}: Client.Timeout exceeded ({connection.timeout_s:g}s)") from None
    except requests.RequestException as err:
        raise HookCallError(f"Post {connection.url!r}: {err}") from None
    if response.status_code == 200:
        return response.content
    text = response.text[:2000]
    if response.status_code == 429:
        delay = retry_after_seconds(response.headers.get("Retry-After"))
        raise HookRetryLater(delay, f"429 Too Many Requests, retry after {delay:g}s: {text}")
    raise HookCallError(f"unsupported status code: {response.status_code} body: {text}")
