"""The session-wide guard (tests/conftest.py, inference.egress_guard): a test that connects outside this
machine fails, and the connection is refused before any packet leaves. The address used is 192.0.2.1
(TEST-NET-1, documentation only): nothing would answer it, and the guard refuses it before connect().
The gateway installs the same guard (its one allowed remote host is the upstream it was given)."""

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from inference import egress_guard

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DOC_ADDRESS = "192.0.2.1"


@pytest.mark.parametrize(
    "address, local",
    [
        (("127.0.0.1", 80), True),
        (("127.8.9.10", 80), True),
        (("::1", 80, 0, 0), True),
        (("0.0.0.0", 80), True),
        (("::ffff:127.0.0.1", 80, 0, 0), True),
        (("localhost", 80), True),
        ("/run/some.sock", True),
        ((DOC_ADDRESS, 80), False),
        (("10.0.0.1", 443), False),
        (("::ffff:192.0.2.1", 80, 0, 0), False),
        (("2001:db8::1", 443, 0, 0), False),
        (("169.254.169.254", 80), False),
    ],
)
def test_which_addresses_are_local(address, local):
    assert egress_guard.is_local(address) is local


def test_allowed_hosts_pass():
    assert egress_guard.is_local(("10.0.0.7", 30000), frozenset({"10.0.0.7"}))
    assert not egress_guard.is_local(("10.0.0.8", 30000), frozenset({"10.0.0.7"}))


def test_a_test_connecting_off_machine_fails_and_nothing_is_sent(tmp_path):
    """An inner pytest session with this conftest: one test connects to the documentation address (and
    swallows the error, as a retrying client would), one connects to loopback. The first fails with
    the guard's message, at once (no connect timeout), the second passes."""
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(f"""
        import socket

        def test_off_machine():
            s = socket.socket()
            s.settimeout(30)
            try:
                s.connect(("{DOC_ADDRESS}", 80))
            except OSError as e:
                assert "refused" in str(e)
            finally:
                s.close()

        def test_loopback():
            server = socket.create_server(("127.0.0.1", 0))
            with server, socket.create_connection(server.getsockname(), timeout=5):
                pass
    """)
    )
    started = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}{':'}{TESTS}"},
    )
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "1 failed, 1 passed" in out, out
    assert f"the test tried to connect outside this machine (('{DOC_ADDRESS}', 80))" in out, out
    assert time.monotonic() - started < 60


def test_the_guard_refuses_before_connecting_in_this_session(outbound_attempts):
    s = socket.socket()
    s.settimeout(30)
    started = time.monotonic()
    with s, pytest.raises(egress_guard.OutboundRefused):
        s.connect((DOC_ADDRESS, 80))
    assert time.monotonic() - started < 1  # refused, not timed out: no SYN was sent
    assert [repr((DOC_ADDRESS, 80))] == outbound_attempts
    outbound_attempts.clear()  # expected here: this test checks the refusal itself


def test_an_installed_guard_refuses_in_a_fresh_process():
    """As the gateway installs it in main(): its allowed host passes, anything else is refused."""
    code = textwrap.dedent(f"""
        import socket, sys
        from inference import egress_guard
        egress_guard.install(allowed_hosts=["127.0.0.1"])
        try:
            socket.create_connection(("{DOC_ADDRESS}", 80), timeout=30)
        except egress_guard.OutboundRefused as e:
            print("refused:", e)
            sys.exit(0)
        sys.exit(1)
    """)
    p = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "refused" in p.stdout, p.stdout + p.stderr


def test_tests_and_benchmarks_run_with_the_hub_offline():
    """This session has the set (tests/conftest.py) and `make bench` exports the same one."""
    import os
    import re

    from inference.offline_env import HUB_OFFLINE

    assert {k: os.environ.get(k) for k in HUB_OFFLINE} == HUB_OFFLINE
    exported = dict(re.findall(r"^bench: export (\w+) = (\S+)$", (REPO / "Makefile").read_text(), re.M))
    assert exported == HUB_OFFLINE
