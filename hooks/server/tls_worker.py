"""A gunicorn worker whose TLS handshakes never hold a request thread, and whose strangers never hold
Metacontroller's threads.

gunicorn's gthread worker runs the TLS handshake blocking, in a request thread, without a deadline: a few
connections that send part of a ClientHello and go silent hold every thread, and Metacontroller's calls
and the kubelet's probes time out. This worker instead
- drives each handshake without blocking from its event loop (the same selector that accepts connections
  and waits on kept-alive ones), with a deadline of HANDSHAKE_TIMEOUT_S; at most MAX_HANDSHAKES are in
  flight per worker (the oldest goes first), so stalled handshakes cost a file descriptor, never a thread;
- hands a connection to a thread only once its handshake is done and a request has started to arrive;
  for a connection without a client certificate (a probe, or anyone), only once its whole request (head and a
  body of at most MAX_ANONYMOUS_REQUEST bytes) is in, read on the event loop within HANDSHAKE_TIMEOUT_S, and
  such a connection serves one request: strangers who stall mid-request hold no thread either;
- serves connections that proved Metacontroller's client certificate (a certificate of the install's CA,
  whose key was discarded) from their own threads, so strangers who complete a handshake and then stall
  (probes and anything else without a certificate) can only ever hold the other threads, and each of their
  socket reads or writes gives up after ANONYMOUS_IO_TIMEOUT_S, and their connections are closed without
  gunicorn's linger on the event loop.

Used by `python -m hooks serve --tls-dir` (hooks/cli/main.py); plain HTTP keeps the gthread worker.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import ssl
import time
from collections import deque
from concurrent import futures
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gunicorn import http, util  # type: ignore[import-untyped]
from gunicorn import sock as gunicorn_sock
from gunicorn.workers.gthread import TConn, ThreadWorker  # type: ignore[import-untyped]

HANDSHAKE_TIMEOUT_S = 5.0
MAX_HANDSHAKES = 512
# A kubelet probe or a stranger: one read or write may wait this long, then the connection is closed (a probe's
# request and answer take milliseconds; its own timeout is 2-3 s).
ANONYMOUS_IO_TIMEOUT_S = 2.0
# Metacontroller: its body and our answer are small, but a hook may work for seconds between the two.
TRUSTED_IO_TIMEOUT_S = 60.0
# What is read on the event loop before a connection without a certificate gets a thread.
MAX_ANONYMOUS_REQUEST = 64 * 1024


class _TimedSSLSocket(ssl.SSLSocket):
    """An SSLSocket whose blocking mode has a timeout: gunicorn sets request threads' sockets blocking, which
    would otherwise let a client that stalls mid-request hold a thread for ever."""

    io_timeout: float | None = None

    def setblocking(self, flag: bool) -> None:
        if flag and self.io_timeout:
            self.settimeout(self.io_timeout)
        else:
            super().setblocking(flag)


@dataclass(eq=False)
class _Handshake:
    """A connection the event loop is still working on: its TLS handshake, then (without a client certificate)
    reading its request into `received`."""

    sock: ssl.SSLSocket
    client: Any
    server: Any
    deadline: float
    events: int = 0  # what it is registered for in the selector (0: not registered)
    received: bytearray = field(default_factory=bytearray)


def request_is_complete(data: bytes | bytearray) -> bool:
    """The head has arrived and, with a Content-Length, the body too (chunked bodies: once the head is in)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    length = 0
    for line in bytes(data[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return True  # malformed: let gunicorn's parser answer it
    return len(data) >= end + 4 + length


class HandshakenConn(TConn):
    """A connection whose TLS handshake the event loop completed: init() must not wrap the socket again."""

    def __init__(self, cfg: Any, sock: ssl.SSLSocket, client: Any, server: Any, trusted: bool, received: bytes = b""):
        super().__init__(cfg, sock, client, server)
        self.trusted = trusted
        self.received = received  # read on the event loop already

    def close(self, graceful: bool = False) -> None:
        """gunicorn closes a finished connection on its event loop and, gracefully, lingers up to 2 s there for
        the peer to close: a stranger who never does would stall the loop. Only Metacontroller gets the linger."""
        if graceful and self.trusted:
            super().close(graceful=True)
        else:
            util.close(self.sock)

    def init(self) -> None:
        if getattr(self, "initialized", False):
            return
        self.initialized = True
        self.sock.setblocking(True)
        if getattr(self, "parser", None) is None:
            self.parser = http.get_parser(self.cfg, self.sock, self.client)
            if self.received:
                self.parser.unreader.unread(self.received)


def has_client_certificate(tls: ssl.SSLSocket) -> bool:
    """The peer presented a certificate that chained to the install's CA (the handshake verified it)."""
    try:
        return bool(tls.getpeercert())
    except (ValueError, OSError):
        return False


class TLSHandshakeWorker(ThreadWorker):
    def init_process(self) -> None:
        self._handshakes: deque[_Handshake] = deque()
        self._tls_context: ssl.SSLContext | None = None
        self._trusted_pool = futures.ThreadPoolExecutor(max_workers=self.cfg.threads, thread_name_prefix="trusted")
        super().init_process()

    def _context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            context = gunicorn_sock.ssl_context(self.cfg)
            context.set_alpn_protocols(["http/1.1"])  # this worker serves HTTP/1.1 only
            context.sslsocket_class = _TimedSSLSocket
            self._tls_context = context
        return self._tls_context

    # --- accepting and handshaking, on the event loop --------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        if not self.cfg.is_ssl:
            super().accept(listener)
            return
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client_sock.setblocking(False)
        try:
            tls = self._context().wrap_socket(
                client_sock,
                server_side=True,
                do_handshake_on_connect=False,
                suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
            )
        except (OSError, ValueError):
            self.nr_conns -= 1
            util.close(client_sock)
            return
        if len(self._handshakes) >= MAX_HANDSHAKES:
            self._drop(self._handshakes.popleft())
        pending = _Handshake(tls, client_addr, listener.getsockname(), time.monotonic() + HANDSHAKE_TIMEOUT_S)
        self._handshakes.append(pending)
        self._advance(pending)

    def _advance(self, pending: _Handshake, _fileobj: Any = None) -> None:
        try:
            pending.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._wait(pending, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._wait(pending, selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError):
            self._handshakes.remove(pending)
            self._drop(pending)
            return
        self._handshakes.remove(pending)
        self._unregister(pending)
        trusted = has_client_certificate(pending.sock)
        pending.sock.io_timeout = TRUSTED_IO_TIMEOUT_S if trusted else ANONYMOUS_IO_TIMEOUT_S  # type: ignore[attr-defined]
        if not trusted:
            reading = _Handshake(pending.sock, pending.client, pending.server, time.monotonic() + HANDSHAKE_TIMEOUT_S)
            self._handshakes.append(reading)
            self._read_request(reading)
            return
        conn = HandshakenConn(self.cfg, pending.sock, pending.client, pending.server, trusted)
        if pending.sock.pending():  # the request is already decrypted and buffered: the selector will not see it
            conn.data_ready = True
            self.enqueue_req(conn)
            return
        # Wait for the request on the event loop as gunicorn waits for a deferred connection's first bytes.
        conn.timeout = time.monotonic() + max(self.cfg.keepalive, HANDSHAKE_TIMEOUT_S)
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def _read_request(self, pending: _Handshake, _fileobj: Any = None) -> None:
        """Read a connection's request without blocking; hand it to a thread once it is all in."""
        while not request_is_complete(pending.received) and len(pending.received) <= MAX_ANONYMOUS_REQUEST:
            try:
                data = pending.sock.recv(MAX_ANONYMOUS_REQUEST)
            except ssl.SSLWantReadError:
                self._wait(pending, selectors.EVENT_READ, self._read_request)
                return
            except ssl.SSLWantWriteError:
                self._wait(pending, selectors.EVENT_WRITE, self._read_request)
                return
            except (ssl.SSLError, OSError):
                data = b""
            if not data:
                self._handshakes.remove(pending)
                self._drop(pending)
                return
            pending.received += data
        self._handshakes.remove(pending)
        self._unregister(pending)
        conn = HandshakenConn(
            self.cfg, pending.sock, pending.client, pending.server, False, received=bytes(pending.received)
        )
        conn.data_ready = True
        self.enqueue_req(conn)

    def _keepalive_after(self, conn: TConn, keepalive: bool) -> bool:
        """A connection without a certificate serves one request: a next one would be read on a thread."""
        if not getattr(conn, "trusted", True):
            return False
        return bool(super()._keepalive_after(conn, keepalive))

    def _wait(self, pending: _Handshake, events: int, step: Any = None) -> None:
        if pending.events == events:
            return
        callback = partial(step or self._advance, pending)
        if pending.events:
            self.poller.modify(pending.sock, events, callback)
        else:
            self.poller.register(pending.sock, events, callback)
        pending.events = events

    def _unregister(self, pending: _Handshake) -> None:
        if pending.events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(pending.sock)
            pending.events = 0

    def _drop(self, pending: _Handshake) -> None:
        self._unregister(pending)
        self.nr_conns -= 1
        util.close(pending.sock)

    def murder_pending(self) -> None:
        """gunicorn's run loop calls this every second: also close handshakes past their deadline."""
        super().murder_pending()
        now = time.monotonic()
        while self._handshakes and self._handshakes[0].deadline <= now:
            self._drop(self._handshakes.popleft())

    # --- requests, on threads ----------------------------------------------------------------------------

    def enqueue_req(self, conn: TConn) -> None:
        if not getattr(conn, "trusted", False):
            super().enqueue_req(conn)
            return
        fs = self._trusted_pool.submit(self.handle, conn)
        fs.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def run(self) -> None:
        try:
            super().run()
        finally:
            while self._handshakes:
                util.close(self._handshakes.popleft().sock)
            self._trusted_pool.shutdown(wait=False)
