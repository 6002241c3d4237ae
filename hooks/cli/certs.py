"""`python -m hooks certs`: the mutual-TLS material between Metacontroller and the hook server.

Prints two Secrets (YAML, for `kubectl apply -f -`) in the hook server's namespace:
  kaito-hooks-tls     the hook server's certificate and key (+ ca.crt), mounted by the Deployment;
  kaito-hooks-client  Metacontroller's client certificate and key (+ ca.crt), named by the controllers'
                      webhook clientTLS and caBundle.
Both come from a CA made for this and forgotten right after: its private key is never written, so
no other certificate can be issued by it. Rotation is running this again (README).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass

from hooks.server.caller_auth import METACONTROLLER_CLIENT_NAME

SERVICE_NAME = "kaito-hooks"
SERVER_SECRET = "kaito-hooks-tls"
CLIENT_SECRET = "kaito-hooks-client"
DEFAULT_VALID_DAYS = 365


@dataclass(frozen=True)
class Issued:
    ca_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes
    client_cert_pem: bytes
    client_key_pem: bytes


def server_names(namespace: str) -> list[str]:
    """The names Metacontroller may use for the Service (its webhook URL is <name>.<namespace>:<port>)."""
    base = f"{SERVICE_NAME}.{namespace}"
    return [SERVICE_NAME, base, f"{base}.svc", f"{base}.svc.cluster.local"]


def issue(namespace: str, valid_days: int = DEFAULT_VALID_DAYS, extra_names: tuple[str, ...] = ()) -> Issued:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=valid_days)

    def name(common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kaito-sglang"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"kaito-hooks CA ({namespace})")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common_name: str, usage, alt_names: list[x509.GeneralName] | None):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), pem_key(key)

    alt: list[x509.GeneralName] = []
    for host in [*server_names(namespace), *extra_names]:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    server_cert, server_key = leaf(f"{SERVICE_NAME}.{namespace}.svc", ExtendedKeyUsageOID.SERVER_AUTH, alt)
    client_cert, client_key = leaf(METACONTROLLER_CLIENT_NAME, ExtendedKeyUsageOID.CLIENT_AUTH, None)
    return Issued(ca.public_bytes(serialization.Encoding.PEM), server_cert, server_key, client_cert, client_key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def secrets_yaml(issued: Issued, namespace: str) -> str:
    import yaml

    def secret(name: str, cert: bytes, key: bytes) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "kaito-sglang"}},
            "data": {"tls.crt": _b64(cert), "tls.key": _b64(key), "ca.crt": _b64(issued.ca_pem)},
        }

    docs = [
        secret(SERVER_SECRET, issued.server_cert_pem, issued.server_key_pem),
        secret(CLIENT_SECRET, issued.client_cert_pem, issued.client_key_pem),
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)


def write_files(issued: Issued, directory: str) -> None:
    """The same material as files (ca.crt, server.crt/.key, client.crt/.key), for local serving and tests."""
    import os

    os.makedirs(directory, exist_ok=True)
    files = {
        "ca.crt": issued.ca_pem,
        "tls.crt": issued.server_cert_pem,
        "tls.key": issued.server_key_pem,
        "client.crt": issued.client_cert_pem,
        "client.key": issued.client_key_pem,
    }
    for filename, data in files.items():
        path = os.path.join(directory, filename)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if filename.endswith(".key") else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)


def run(namespace: str, valid_days: int, out_dir: str | None, extra_names: tuple[str, ...]) -> int:
    import sys

    try:
        issued = issue(namespace, valid_days, extra_names)
    except ImportError:
        print(
            "python -m hooks certs needs the cryptography package: pip install 'kaito-sglang[azure]'", file=sys.stderr
        )
        return 2
    if out_dir:
        write_files(issued, out_dir)
    else:
        sys.stdout.write(secrets_yaml(issued, namespace))
    return 0
