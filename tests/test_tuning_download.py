"""The tuning input downloader against a real HTTP server on 127.0.0.1.

Loopback is forbidden by policy, so the success paths pass the test-only `allow_loopback=True`; the CLI
has no way to set it. The only fake is a DNS resolver in two tests (public DNS is not reachable here):
it maps a made-up public-looking name to an address, which also proves the client connects to the
vetted address instead of resolving the name again.
"""

import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from tuning.download import DownloadError, download_all, fetch, filename_for
from workload_contract.url_policy import UrlRefused, resolved_problem, vetted_addresses

pytestmark = pytest.mark.integration  # loopback HTTP servers and the downloader CLI

BODY = b"PAR1" + bytes(range(256)) * 64


class Handler(http.server.BaseHTTPRequestHandler):
    flaky_left = 0
    seen_hosts: ClassVar[list[str]] = []

    def log_message(self, *args):
        pass

    def _send(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if not any(k == "Content-Length" for k, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        Handler.seen_hosts.append(self.headers.get("Host"))
        path = self.path.split("?", 1)[0]
        port = self.server.server_address[1]
        if path.startswith("/files/"):
            self._send(200, BODY)
        elif path == "/empty.csv":
            self._send(200, b"")
        elif path == "/flaky.csv":
            if Handler.flaky_left > 0:
                Handler.flaky_left -= 1
                self._send(503, b"busy")
            else:
                self._send(200, b"a,b\n1,2\n")
        elif path == "/short.csv":
            self._send(200, b"only a bit", headers=[("Content-Length", "1000")])
        elif path == "/redir-ok":
            self._send(302, headers=[("Location", "/files/redirected.parquet")])
        elif path == "/redir-meta":
            self._send(302, headers=[("Location", "http://169.254.169.254/latest/meta-data/")])
        elif path == "/redir-private":
            self._send(301, headers=[("Location", "http://10.1.2.3/data.csv")])
        elif path == "/redir-file":
            self._send(302, headers=[("Location", "file:///etc/passwd")])
        elif path == "/loop":
            self._send(302, headers=[("Location", f"http://127.0.0.1:{port}/loop")])
        else:
            self._send(404, b"nope")


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    Handler.seen_hosts = []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_filename_is_the_basename_of_the_url_path():
    url = (
        "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/"
        "train-00000-of-00001-54e3756291ca09c6.parquet?download=true"
    )
    assert filename_for(url) == "train-00000-of-00001-54e3756291ca09c6.parquet"
    assert filename_for("http://example.com/a/b%20c.csv#frag") == "b c.csv"
    for bad in ("http://example.com/", "http://example.com", "http://example.com/a/.."):
        with pytest.raises(UrlRefused):
            filename_for(bad)


def test_downloads_a_file_from_the_loopback_server_when_explicitly_allowed(server, tmp_path):
    path = fetch(f"{server}/files/train.parquet?download=true", str(tmp_path), allow_loopback=True)
    assert path == str(tmp_path / "train.parquet")
    assert (tmp_path / "train.parquet").read_bytes() == BODY
    assert sorted(os.listdir(tmp_path)) == ["train.parquet"]  # no partial file left behind


def test_the_strict_default_refuses_the_same_loopback_server(server, tmp_path):
    with pytest.raises(UrlRefused, match="loopback"):
        fetch(f"{server}/files/train.parquet", str(tmp_path))
    assert Handler.seen_hosts == []  # refused before any connection
    assert os.listdir(tmp_path) == []


def test_redirects_are_followed_and_each_hop_is_vetted(server, tmp_path):
    path = fetch(f"{server}/redir-ok", str(tmp_path), allow_loopback=True)
    assert os.path.basename(path) == "redir-ok"  # named after the URL the user gave
    assert Path(path).read_bytes() == BODY
    for hop, why in (("/redir-meta", "metadata"), ("/redir-private", "private"), ("/redir-file", "scheme 'file'")):
        with pytest.raises(UrlRefused, match=why):
            fetch(f"{server}{hop}", str(tmp_path), allow_loopback=True, backoff_s=0)
    with pytest.raises(DownloadError, match="redirects"):
        fetch(f"{server}/loop", str(tmp_path), allow_loopback=True, attempts=1, max_redirects=3)


def test_requires_http_200_and_a_non_empty_body(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        fetch(f"{server}/missing.csv", str(tmp_path), allow_loopback=True, attempts=2, backoff_s=0)
    with pytest.raises(DownloadError, match="empty"):
        fetch(f"{server}/empty.csv", str(tmp_path), allow_loopback=True, attempts=1)
    with pytest.raises(DownloadError):
        fetch(f"{server}/short.csv", str(tmp_path), allow_loopback=True, attempts=1)
    assert os.listdir(tmp_path) == []


def test_retries_transient_failures(server, tmp_path):
    Handler.flaky_left = 2
    path = fetch(f"{server}/flaky.csv", str(tmp_path), allow_loopback=True, attempts=3, backoff_s=0)
    assert Path(path).read_bytes() == b"a,b\n1,2\n"
    Handler.flaky_left = 5
    with pytest.raises(DownloadError, match="3 attempts"):
        fetch(f"{server}/flaky.csv", str(tmp_path / "x"), allow_loopback=True, attempts=3, backoff_s=0)


def test_dns_time_refusal_of_a_name_resolving_to_loopback():
    # Real resolution through /etc/hosts: "localhost" is 127.0.0.1 on any machine.
    infos = socket.getaddrinfo("localhost", 80, 0, socket.SOCK_STREAM)
    assert "loopback" in resolved_problem("localhost", infos)
    # With the static name rule waived, the resolved address alone still gets it refused.
    assert resolved_problem("localhost", infos, allow_loopback=True) is None
    hostname = socket.gethostname()
    if "." in hostname:
        pytest.skip("this machine's host name is fully qualified; the single-label check would hide the DNS check")
    infos = socket.getaddrinfo(hostname, 80, 0, socket.SOCK_STREAM)
    problem = resolved_problem(hostname, infos)
    if all(i[4][0].startswith(("127.", "10.", "192.168.", "172.")) for i in infos):
        assert problem is not None


def _resolver_to(address):
    # Stands in for public DNS, which cannot be reached from this machine.
    def resolve(host, port, family=0, type_=0, *rest):
        return socket.getaddrinfo(address, port, family, type_)

    return resolve


def test_a_public_looking_name_that_resolves_to_internal_addresses_is_refused(tmp_path):
    for address, why in (("169.254.169.254", "metadata"), ("10.9.8.7", "private"), ("127.0.0.1", "loopback")):
        with pytest.raises(UrlRefused, match=f"resolves to a forbidden address.*{why}"):
            fetch("http://data.example.com/train.csv", str(tmp_path), resolver=_resolver_to(address))
        with pytest.raises(UrlRefused):
            vetted_addresses("data.example.com", 80, _resolver_to(address))
    assert os.listdir(tmp_path) == []


def test_connects_to_the_vetted_address_not_a_fresh_lookup(server, tmp_path):
    port = server.rsplit(":", 1)[1]
    # data.example.test does not exist in any DNS: the request can only arrive because the client
    # connected to the address the vetting resolver returned.
    path = fetch(
        f"http://data.example.test:{port}/files/d.parquet",
        str(tmp_path),
        allow_loopback=True,
        resolver=_resolver_to("127.0.0.1"),
    )
    assert Path(path).read_bytes() == BODY
    assert Handler.seen_hosts == [f"data.example.test:{port}"]


def test_no_shell_is_involved(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    with pytest.raises(UrlRefused):
        download_all([f"http://x;touch${{IFS}}{marker}/a.csv"], str(tmp_path / "d"))
    # A path full of shell syntax is only data: fetched literally, saved under its literal name.
    name = "$(touch pwned); `touch pwned` && touch pwned.parquet"
    url = f"{server}/files/" + name.replace(" ", "%20")
    path = fetch(url, str(tmp_path / "d"), allow_loopback=True)
    assert os.path.basename(path) == name
    assert not marker.exists()


def test_download_all_refuses_everything_before_fetching_anything(server, tmp_path):
    urls = [f"{server}/files/a.parquet", "http://169.254.169.254/b.parquet"]
    with pytest.raises(UrlRefused, match="metadata"):
        download_all(urls, str(tmp_path), allow_loopback=True)
    assert Handler.seen_hosts == []
    with pytest.raises(UrlRefused, match="both be saved"):
        download_all([f"{server}/files/a.csv", f"{server}/other/a.csv"], str(tmp_path), allow_loopback=True)
    paths = download_all([f"{server}/files/a.parquet", f"{server}/files/b.parquet"], str(tmp_path), allow_loopback=True)
    assert sorted(os.listdir(tmp_path)) == ["a.parquet", "b.parquet"] and len(paths) == 2


# Runs the module as a user does, like test_inference_launch.launch does for its own module.
def _cli(*args):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        [sys.executable, "-m", "tuning.download", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_refuses_with_exit_2_and_has_no_loopback_switch(server, tmp_path):
    for url in (
        "http://169.254.169.254/latest/meta-data/iam",
        "http://10.0.0.1/a.csv",
        "http://127.0.0.1/a.csv",
        "http://[::1]/a.csv",
        "http://localhost/a.csv",
        "file:///etc/passwd",
        "ftp://example.com/a.csv",
        "http://x;rm -rf /",
        f"{server}/files/a.parquet",
    ):
        res = _cli("--dest", str(tmp_path), url)
        assert res.returncode == 2, (url, res.stdout, res.stderr)
        assert "refused" in res.stdout
    assert os.listdir(tmp_path) == []
    assert "loopback" not in _cli("--help").stdout
