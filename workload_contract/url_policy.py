"""Which URLs the tuning input downloader may fetch (stdlib only).

Two layers: `url_problem` is the static check (no DNS) the hook runs on `tuning.input.urls`;
`vetted_addresses` resolves a host and refuses it when any address it resolves to is not public, and
the downloader then connects to exactly those addresses (so a DNS answer cannot change in between).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

ALLOWED_SCHEMES = ("http", "https")

# Names that reach the node, the cluster or a cloud metadata service without being IP literals.
_FORBIDDEN_NAMES = frozenset(
    {
        "localhost",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
        "kubernetes",
        "kubernetes.default",
    }
)
_FORBIDDEN_SUFFIXES = (".localhost", ".local", ".internal", ".svc", ".cluster.local", ".home.arpa")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})


# Addresses that look public (Python calls them global) but reach the node, the VNet or an internal
# translator. The IPv6 ranges carry an IPv4 address in their low 32 bits: that address is judged
# first so the message names e.g. the metadata service, and the range is refused even when it is public.
INTERNAL_RANGES = (
    (ipaddress.ip_network("168.63.129.16/32"), "is Azure's WireServer / host DNS (168.63.129.16)"),
    (
        ipaddress.ip_network("::/96"),
        "is an IPv4-compatible IPv6 address (::a.b.c.d, deprecated; hosts may route it to IPv4)",
    ),
    (ipaddress.ip_network("::ffff:0:0:0/96"), "is an IPv4-translated IPv6 address (::ffff:0:a.b.c.d, SIIT)"),
    (
        ipaddress.ip_network("64:ff9b::/96"),
        "is in the NAT64 prefix 64:ff9b::/96 (an in-network translator reaches IPv4 with it)",
    ),
    (ipaddress.ip_network("64:ff9b:1::/48"), "is in the local-use NAT64 prefix 64:ff9b:1::/48"),
    (ipaddress.ip_network("fec0::/10"), "is site-local (fec0::/10, deprecated but still routed inside networks)"),
)
_EMBEDS_IPV4_LOW_BITS = tuple(net for net, _ in INTERNAL_RANGES[1:5])


class UrlRefused(ValueError):
    """A URL (or what its host resolves to) is not allowed as a tuning input."""


def address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool = False) -> str | None:
    """Why a connection to `ip` is refused, or None for a public unicast address.

    `allow_loopback` exists for tests that serve files from 127.0.0.1; no production caller sets it.
    """
    if isinstance(ip, ipaddress.IPv6Address) and not (ip.is_unspecified or ip.is_loopback):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            return address_problem(embedded, allow_loopback=allow_loopback)
        if any(ip in net for net in _EMBEDS_IPV4_LOW_BITS):
            problem = address_problem(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), allow_loopback=allow_loopback)
            if problem:
                return f"{problem} (embedded in {ip})"
        if ip.scope_id:
            return f"address {ip} has an IPv6 zone (a link-local address)"
        for net, why in INTERNAL_RANGES:
            if ip in net:
                return f"address {ip} {why}"
    elif ip in INTERNAL_RANGES[0][0]:
        return f"address {ip} {INTERNAL_RANGES[0][1]}"
    if ip in _METADATA_ADDRESSES:
        return f"address {ip} is the cloud instance metadata service"
    if ip.is_unspecified:
        return f"address {ip} is unspecified"
    if ip.is_loopback:
        if allow_loopback:
            return None
        return f"address {ip} is a loopback address"
    if ip.is_link_local:
        return f"address {ip} is link-local (169.254.0.0/16, fe80::/10; cloud metadata lives there)"
    if ip.is_multicast:
        return f"address {ip} is multicast"
    if ip.is_private:
        return f"address {ip} is in a private range"
    if not ip.is_global:
        return f"address {ip} is not a public address (reserved or shared range)"
    return None


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    host = host[:-1] if host.endswith(".") else host
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # Legacy IPv4 spellings ("127.1", "2130706433", "0x7f.0.0.1") that the resolver would accept.
    if re.fullmatch(r"[0-9a-fx.]+", host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def host_problem(host: str, *, allow_loopback: bool = False) -> str | None:
    """Static judgement of a URL host (already lower-cased, without brackets or port)."""
    ip = _ip_literal(host)
    if ip is not None:
        return address_problem(ip, allow_loopback=allow_loopback)
    name = host[:-1] if host.endswith(".") else host
    if allow_loopback and name == "localhost":
        return None  # still vetted after resolution: it must resolve to loopback only
    if not name:
        return "the URL has no host"
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        return f"host {host!r} is not a valid DNS name"
    if name in _FORBIDDEN_NAMES:
        return f"host {host!r} names the local machine, the cluster or a metadata service"
    if name.endswith(_FORBIDDEN_SUFFIXES):
        return f"host {host!r} is a local/cluster-internal name"
    if "." not in name:
        return f"host {host!r} is a single-label (cluster-internal) name; use a public fully qualified name"
    return None


def url_problem(url: str, *, allow_loopback: bool = False) -> str | None:
    """The static check (no DNS): None when `url` may be downloaded, else a message naming the problem."""
    if not isinstance(url, str) or not url:
        return "the URL is empty"
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "the URL contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"the URL cannot be parsed ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        shown = scheme or "(none)"
        return f"scheme {shown!r} is not allowed; only http and https URLs can be downloaded"
    host = parts.hostname
    if not host:
        return "the URL has no host"
    if port == 0:
        return "port 0 is not a valid port"
    return host_problem(host, allow_loopback=allow_loopback)


def url_host_port(url: str) -> tuple[str, int]:
    """Host and port (scheme default) of a URL that passed `url_problem`."""
    parts = urlsplit(url)
    default = 443 if parts.scheme.lower() == "https" else 80
    return parts.hostname or "", parts.port or default


def resolved_problem(host: str, infos: list[tuple], *, allow_loopback: bool = False) -> str | None:
    """The DNS-time check: None when every resolved address of `host` is allowed."""
    if not infos:
        return f"host {host!r} does not resolve"
    for info in infos:
        problem = address_problem(ipaddress.ip_address(info[4][0]), allow_loopback=allow_loopback)
        if problem:
            return f"host {host!r} resolves to a forbidden address: {problem}"
    return None


def vetted_addresses(host: str, port: int, resolver=socket.getaddrinfo, *, allow_loopback: bool = False) -> list[tuple]:
    """Resolve `host` and return getaddrinfo entries (family, type, proto, canonname, sockaddr).

    Raises UrlRefused when the host fails the static check, does not resolve, or when ANY resolved
    address is not public: a name mixing public and internal answers is refused outright (DNS rebinding).
    """
    problem = host_problem(host, allow_loopback=allow_loopback)
    if problem:
        raise UrlRefused(problem)
    try:
        infos = resolver(host, port, 0, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefused(f"host {host!r} does not resolve ({exc})") from exc
    problem = resolved_problem(host, infos, allow_loopback=allow_loopback)
    if problem:
        raise UrlRefused(problem)
    return infos
