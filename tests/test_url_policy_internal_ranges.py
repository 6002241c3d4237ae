"""Addresses that Python calls global but that reach the node, the VNet or an in-network translator.

Judged by policy only: the static check (`url_problem`) and the DNS-time check with a resolver stub
(`vetted_addresses`); nothing here opens a socket.
"""

from __future__ import annotations

import socket

import pytest

from workload_contract.url_policy import UrlRefused, url_problem, vetted_addresses

INTERNAL = {
    "168.63.129.16": "WireServer",
    "[::ffff:168.63.129.16]": "WireServer",
    "[::127.0.0.1]": "loopback",
    "[::169.254.169.254]": "metadata",
    "[::8.8.8.8]": "IPv4-compatible",
    "[::ffff:0:127.0.0.1]": "loopback",
    "[::ffff:0:8.8.8.8]": "IPv4-translated",
    "[64:ff9b::8.8.8.8]": "NAT64",
    "[64:ff9b::10.0.0.1]": "private",
    "[64:ff9b:1::8.8.8.8]": "local-use NAT64",
    "[64:ff9b:1:ab::1]": "64:ff9b:1",
    "[fec0::1]": "site-local",
    "[fec0::8.8.8.8]": "site-local",
    "[feff:ffff::1]": "site-local",
}


# The same table-driven check as test_tuning_config's static refusals, over internal address ranges.
@pytest.mark.parametrize("host, why", sorted(INTERNAL.items()))
def test_internal_addresses_are_refused_statically(host, why):
    problem = url_problem(f"https://{host}/train.parquet")
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize("host", sorted(INTERNAL))
def test_a_name_resolving_to_an_internal_address_is_refused(host):
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET

    def resolver(name, port, *_args):
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    with pytest.raises(UrlRefused, match="forbidden address"):
        vetted_addresses("data.example.com", 443, resolver)


@pytest.mark.parametrize("host", ["8.8.8.8", "[::ffff:8.8.8.8]", "[2606:4700::1111]", "168.63.129.17", "[fe00::1]"])
def test_neighbours_of_the_internal_ranges_stay_allowed(host):
    assert url_problem(f"https://{host}/train.parquet") is None
