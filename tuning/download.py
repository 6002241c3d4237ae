"""`python -m tuning.download --dest DIR URL...`: fetch tuning input files safely.

Each URL must pass `workload_contract.url_policy` statically; its host is then resolved once, every resolved address
is vetted, and the connection goes to those vetted addresses only (TLS still verifies the host name).
Redirects are followed by hand and each hop is vetted the same way. No shell, no subprocess: URLs and
file names are only ever data. A file is kept only when the answer is HTTP 200 with a non-empty body.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import logging
import os
import posixpath
import socket
import ssl
import sys
import time
from urllib.parse import unquote, urljoin, urlsplit

from workload_contract.url_policy import UrlRefused, url_host_port, url_problem, vetted_addresses

log = logging.getLogger("tuning.download")
REDIRECTS = (301, 302, 303, 307, 308)
USER_AGENT = "kaito-sglang-tuning-download/0.1"


class DownloadError(RuntimeError):
    """A download failed after its retries (not a policy refusal)."""


def filename_for(url: str) -> str:
    """The basename of the URL path (query and fragment dropped, percent-decoding applied)."""
    name = posixpath.basename(unquote(urlsplit(url).path))
    if name in ("", ".", "..") or "\x00" in name or "\\" in name:
        raise UrlRefused(f"URL {url!r} has no file name at the end of its path")
    return name


def _connect(addresses: list[tuple], timeout: float) -> socket.socket:
    last: OSError | None = None
    for family, type_, proto, _canon, sockaddr in addresses:
        sock = socket.socket(family, type_, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError("no address to connect to")


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, addresses: list[tuple], timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses

    def connect(self):
        self.sock = _connect(self._addresses, self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, addresses: list[tuple], timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._addresses = addresses

    def connect(self):
        sock = _connect(self._addresses, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _open(url: str, allow_loopback: bool, resolver, timeout: float):
    """One vetted GET; returns (connection, response)."""
    problem = url_problem(url, allow_loopback=allow_loopback)
    if problem:
        raise UrlRefused(f"{url}: {problem}")
    host, port = url_host_port(url)
    try:
        addresses = vetted_addresses(host, port, resolver, allow_loopback=allow_loopback)
    except UrlRefused as exc:
        raise UrlRefused(f"{url}: {exc}") from exc
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    cls = _PinnedHTTPS if parts.scheme.lower() == "https" else _PinnedHTTP
    conn = cls(host, port, addresses, timeout)
    conn.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    return conn, conn.getresponse()


def fetch(
    url: str,
    dest_dir: str,
    *,
    allow_loopback: bool = False,
    resolver=socket.getaddrinfo,
    attempts: int = 3,
    backoff_s: float = 2.0,
    timeout: float = 60.0,
    max_redirects: int = 5,
) -> str:
    """Download one URL into `dest_dir/<basename of the URL path>` and return that path.

    Raises UrlRefused (never retried) for any policy refusal, DownloadError when all attempts fail.
    `allow_loopback` is for tests only; the CLI never sets it.
    """
    name = filename_for(url)
    problem = url_problem(url, allow_loopback=allow_loopback)
    if problem:
        raise UrlRefused(f"{url}: {problem}")
    os.makedirs(dest_dir, exist_ok=True)
    final = os.path.join(dest_dir, name)
    partial = os.path.join(dest_dir, f".{name}.part")
    last_error = "no attempt made"
    for attempt in range(1, attempts + 1):
        try:
            current = url
            for _hop in range(max_redirects + 1):
                conn, resp = _open(current, allow_loopback, resolver, timeout)
                try:
                    if resp.status in REDIRECTS:
                        location = resp.getheader("Location")
                        if not location:
                            raise DownloadError(f"{current}: HTTP {resp.status} without a Location")
                        current = urljoin(current, location)
                        continue
                    if resp.status != 200:
                        raise DownloadError(f"{current}: HTTP {resp.status} {resp.reason}")
                    size = _save(resp, partial)
                finally:
                    conn.close()
                if size == 0:
                    raise DownloadError(f"{current}: the body is empty")
                os.replace(partial, final)
                log.info("downloaded %s -> %s (%d bytes)", url, final, size)
                return final
            raise DownloadError(f"{url}: more than {max_redirects} redirects")
        except UrlRefused:
            _remove(partial)
            raise
        except (DownloadError, OSError, http.client.HTTPException) as exc:
            _remove(partial)
            last_error = str(exc)
            log.warning("attempt %d/%d for %s failed: %s", attempt, attempts, url, last_error)
            if attempt < attempts:
                time.sleep(backoff_s * attempt)
    raise DownloadError(f"{url}: giving up after {attempts} attempts: {last_error}")


def _save(resp, path: str) -> int:
    expected = resp.getheader("Content-Length")
    size = 0
    with open(path, "wb") as f:
        while chunk := resp.read(1 << 20):
            f.write(chunk)
            size += len(chunk)
    if expected is not None and expected.isdigit() and int(expected) != size:
        raise DownloadError(f"short body: {size} of {expected} bytes")
    return size


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def download_all(urls: list[str], dest_dir: str, **kwargs) -> list[str]:
    """Check every URL statically and for clashing file names first, then fetch them in order."""
    names: dict[str, str] = {}
    for url in urls:
        problem = url_problem(url, allow_loopback=kwargs.get("allow_loopback", False))
        if problem:
            raise UrlRefused(f"{url}: {problem}")
        name = filename_for(url)
        if name in names:
            raise UrlRefused(f"{url} and {names[name]} would both be saved as {name!r}")
        names[name] = url
    return [fetch(url, dest_dir, **kwargs) for url in urls]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stdout)
    p = argparse.ArgumentParser(prog="python -m tuning.download", description=__doc__)
    p.add_argument("--dest", required=True, help="directory to save the files into")
    p.add_argument("--attempts", type=int, default=3)
    p.add_argument("urls", nargs="+", metavar="URL")
    args = p.parse_args(argv)
    try:
        download_all(args.urls, args.dest, attempts=max(1, args.attempts))
    except UrlRefused as exc:
        log.error("refused: %s", exc)
        return 2
    except DownloadError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
