"""Refuse, before connecting, any socket connection that would leave this machine.

For processes that must never call out: the gateway (it talks to its runtime on loopback) and the test
session. It is a Python audit hook on `socket.connect` and `socket.sendto`, which CPython raises before
the system call, so a refused address sees no packet. Unix sockets and loopback addresses pass; so do
the hosts a process names as allowed (a gateway pointed at a non-loopback upstream on purpose).
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable, Iterable

_EVENTS = frozenset({"socket.connect", "socket.sendto"})


class OutboundRefused(PermissionError):
    """A connection to an address outside this machine, refused before it was made."""


def _local_ip(text: str) -> bool | None:
    """True/False for an IP address literal (loopback or unspecified is local); None for a name."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def is_local(address, allowed: frozenset[str] = frozenset()) -> bool:
    """Whether a socket address (as given to connect/sendto) stays on this machine."""
    if not isinstance(address, tuple) or not address:
        return True  # a Unix socket path (str/bytes) or an address family without hosts
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return True  # e.g. netlink (pid, groups): kernel-local
    if host in allowed:
        return True
    local = _local_ip(host)
    if local is not None:
        return local
    if host == "localhost":
        return True
    # A name: connect() has resolved it already (the lookup is answered from the same cache); it is
    # local only if every address it names is.
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(_local_ip(str(info[4][0])) for info in infos)


_installed: list[Callable[[str, tuple], None]] = []


def install(allowed_hosts: Iterable[str] = (), on_refused: Callable[[object], None] | None = None) -> None:
    """Add the audit hook to this process (audit hooks cannot be removed; a second call is a no-op).
    `on_refused(address)` runs before the refusal is raised: a caller that may swallow OSError (a
    retrying client) still gets to record the attempt."""
    if _installed:
        return
    allowed = frozenset(h for h in allowed_hosts if h)

    def hook(event: str, args: tuple) -> None:
        if event in _EVENTS and len(args) >= 2 and not is_local(args[1], allowed):
            if on_refused is not None:
                on_refused(args[1])
            raise OutboundRefused(f"connection to {args[1]!r} refused: this process only talks to this machine")

    sys.addaudithook(hook)
    _installed.append(hook)
