"""HTTP endpoints: /metrics from the snapshot, health, readiness, reload and the landing page."""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import logging
import resource
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics

from exporter import landing, logs
from exporter.snapshot import Store

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Environ = dict[str, Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]


Encoder = Callable[[CollectorRegistry], bytes]
# The two formats served, so the cache holds at most two renderings whatever clients send.
TEXT: tuple[Encoder, str] = (text_format.generate_latest, text_format.CONTENT_TYPE_PLAIN_0_0_4)
OPENMETRICS: tuple[Encoder, str] = (openmetrics.generate_latest, openmetrics.CONTENT_TYPE_LATEST)


def gzip_accepted(accept_encoding: str) -> bool:
    """Whether Accept-Encoding allows gzip (RFC 9110 12.5.3): `gzip` or, unlisted, `*` with a
    q-value above 0; `gzip;q=0` refuses it."""
    quality: dict[str, float] = {}
    for item in accept_encoding.split(",")[:32]:
        coding, *params = (part.strip().lower() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0  # a q-value we cannot read accepts nothing
        quality.setdefault(coding, q)
    return quality.get("gzip", quality.get("*", 0.0)) > 0


def negotiate(accept: str) -> tuple[Encoder, str]:
    """OpenMetrics 1.0.0 when the Accept header lists OpenMetrics without a version or with 1.0.0,
    the text format 0.0.4 otherwise (any other version, or a malformed one)."""
    for item in accept.split(",")[:32]:
        media, *params = (part.strip().lower() for part in item.split(";"))
        if media == "application/openmetrics-text" and all(
            p.replace(" ", "") == "version=1.0.0" or not p.startswith("version") for p in params
        ):
            return OPENMETRICS
    return TEXT


@dataclass(frozen=True, slots=True)
class Routes:
    telemetry_path: str
    ready: Callable[[], bool]
    reload: Callable[[], str | None]  # None on success, else why it failed
    # Why a reload cannot do anything here (the demo has no config file), or None.
    no_reload: str | None = None


class MetricsCache:
    """Renders the exposition once per store change, UTC day and set of overdue polls, whatever
    the scrape rate.

    What the collector yields depends only on the store, on the UTC date (cycle ends and day
    boundaries both fall at 00:00 UTC) and on which polls run past their deadline, so that
    triple is an exact cache key.
    """

    def __init__(
        self, registry: CollectorRegistry, store: Store, clock: Callable[[], datetime]
    ) -> None:
        self._registry = registry
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._key: tuple[int, object, frozenset[str]] | None = None
        self._rendered: dict[str, tuple[bytes, bytes]] = {}

    def render(self, accept: str) -> tuple[bytes, str, bytes]:
        """(body, content type, gzipped body) for an Accept header."""
        encoder, content_type = negotiate(accept)
        now = self._clock()
        key = (self._store.generation, now.date(), self._store.overdue(now))
        with self._lock:
            if key != self._key:
                self._key = key
                self._rendered = {}
            cached = self._rendered.get(content_type)
            if cached is None:
                body = encoder(self._registry)
                cached = self._rendered[content_type] = (body, gzip.compress(body, 6))
        return cached[0], content_type, cached[1]


class App:
    """The WSGI application."""

    def __init__(
        self,
        routes: Routes,
        metrics: MetricsCache,
        store: Store,
        clock: Callable[[], datetime],
    ) -> None:
        self._routes = routes
        self._metrics = metrics
        self._store = store
        self._clock = clock

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            return self._dispatch(path, method, environ, start_response)
        except Exception:  # the handler's edge: one line in the log, a 500 to the client
            log.exception("request failed", extra=logs.fields(path=path))
            return _text(start_response, "500 Internal Server Error", "internal error\n")

    def _dispatch(
        self, path: str, method: str, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes]:
        if path == "/-/reload":
            if method != "POST":
                return _text(
                    start_response,
                    "405 Method Not Allowed",
                    "use POST to reload\n",
                    [("Allow", "POST")],
                )
            if self._routes.no_reload is not None:
                log.info("reload skipped", extra=logs.fields(reason=self._routes.no_reload))
                return _text(
                    start_response, "409 Conflict", f"nothing reloaded: {self._routes.no_reload}\n"
                )
            problem = self._routes.reload()
            if problem is None:
                return _text(start_response, "200 OK", "config reloaded\n")
            return _text(start_response, "500 Internal Server Error", f"reload failed: {problem}\n")
        if method not in {"GET", "HEAD"}:
            return _text(
                start_response, "405 Method Not Allowed", "method not allowed\n", [("Allow", "GET")]
            )
        if path == self._routes.telemetry_path:
            body, content_type, zipped = self._metrics.render(environ.get("HTTP_ACCEPT", ""))
            headers = [
                ("Content-Type", content_type),
                ("Cache-Control", "no-store"),
                ("Vary", "Accept, Accept-Encoding"),
            ]
            if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
                headers.append(("Content-Encoding", "gzip"))
                body = zipped
            headers.append(("Content-Length", str(len(body))))
            start_response("200 OK", headers)
            return [body]
        if path == "/-/healthy":
            return _text(start_response, "200 OK", "Healthy\n")
        if path == "/-/ready":
            if self._routes.ready():
                return _text(start_response, "200 OK", "Ready\n")
            return _text(
                start_response, "503 Service Unavailable", "Not ready: first polls running\n"
            )
        if path == "/":
            now = self._clock()
            page = landing.render(
                self._store.states,
                now,
                self._routes.telemetry_path,
                overdue=self._store.overdue(now),
            ).encode()
            start_response(
                "200 OK",
                [
                    ("Content-Type", "text/html; charset=utf-8"),
                    ("Content-Length", str(len(page))),
                    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
                ],
            )
            return [page]
        return _text(start_response, "404 Not Found", "not found\n")


def _text(
    start_response: StartResponse,
    status: str,
    text: str,
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = text.encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(status, headers + (extra or []))
    return [body]


# Bounds on clients (docs/security.md), as Go's http.Server ReadHeaderTimeout and WriteTimeout.
MAX_CONNECTIONS = 128  # handled at once; beyond, the oldest one still sending its head is dropped
HEADER_TIMEOUT = 5.0  # from accept to the end of the request head, TLS handshake included
RESPONSE_TIMEOUT = 30.0  # from the end of the head to the end of the answer
# Plain-HTTP request heads read at once by the event loop, each costing a socket and a buffer, not
# a thread; beyond, the oldest is dropped. Kept well under the open-file limit (pending_bound).
MAX_PENDING_HEADS = 1024
MAX_HEAD = 65536  # bytes buffered per pending head; a longer one goes to the handler to refuse
_REAP_EVERY = 0.25
_ACCEPTS_PER_TURN = 64  # then the loop reads heads before accepting more
# Go's answer to plain HTTP on a TLS port.
_PLAIN_HTTP_TO_TLS = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)


def pending_bound() -> int:
    """MAX_PENDING_HEADS, or a quarter of the open-file limit when that is lower."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_PENDING_HEADS
    return max(8, min(MAX_PENDING_HEADS, soft // 4))


class _Replay(io.RawIOBase):
    """The head the event loop already read, then the socket."""

    def __init__(self, head: bytes, conn: socket.socket) -> None:
        self._head = memoryview(head)
        self._conn = conn

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        return self._conn.recv_into(buffer)


class _QuietHandler(WSGIRequestHandler):
    # Per socket operation; the deadlines above bound the whole exchange.
    timeout = RESPONSE_TIMEOUT
    server: _ThreadingServer

    def setup(self) -> None:
        super().setup()
        head = self.server.heads.pop(self.connection, None)
        if head is not None:
            self.rfile.close()
            self.rfile = io.BufferedReader(_Replay(head, self.connection))

    def parse_request(self) -> bool:
        parsed = super().parse_request()  # reads the header lines too
        self.server.watch(self.connection, RESPONSE_TIMEOUT, head_done=True)
        return parsed

    def log_message(self, format: str, *args: Any) -> None:
        # The request line is the client's text: the formatters escape what it holds.
        log.debug("http request", extra=logs.fields(request=format % args))


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """Accepts and reads plain-HTTP request heads in one event loop (the serve_forever thread), as
    Go's net/http does with goroutines, so clients that trickle their heads cost no thread and a
    scraper is accepted at once; a complete head goes to a handler thread. TLS connections go to
    a handler thread at accept: the handshake and head are read there."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 refuses connections when many scrapers arrive at once.
    request_queue_size = 128
    tls: TlsContext | None = None

    def server_activate(self) -> None:
        super().server_activate()
        self._deadlines: dict[socket.socket, tuple[float, bool]] = {}  # -> (deadline, head done)
        self._deadlines_lock = threading.Lock()
        # Complete heads read by the loop, taken by the handler's setup().
        self.heads: dict[socket.socket, bytes] = {}
        self._closed = threading.Event()
        self._stopped = threading.Event()
        self._wake_loop, self._waker = socket.socketpair()
        threading.Thread(target=self._reap, name="web-reaper", daemon=True).start()

    def watch(self, conn: socket.socket, seconds: float, head_done: bool) -> None:
        with self._deadlines_lock:
            self._deadlines.pop(conn, None)  # re-inserted last: the dict stays in age order
            self._deadlines[conn] = (time.monotonic() + seconds, head_done)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        bound = pending_bound()
        self.socket.setblocking(False)
        self._selector = selectors.DefaultSelector()
        # In age order, so deadlines too: socket -> (deadline, head so far, client address).
        self._pending: dict[socket.socket, tuple[float, bytearray, Any]] = {}
        self._selector.register(self.socket, selectors.EVENT_READ)
        self._selector.register(self._wake_loop, selectors.EVENT_READ)
        try:
            while not self._closed.is_set():
                wait = poll_interval
                if self._pending:
                    first_deadline = next(iter(self._pending.values()))[0]
                    wait = min(wait, max(0.0, first_deadline - time.monotonic()))
                for key, _ in self._selector.select(wait):
                    if key.fileobj is self.socket:
                        self._accept(bound)
                    elif key.fileobj is self._wake_loop:
                        with contextlib.suppress(OSError):
                            self._wake_loop.recv(64)
                    else:
                        assert isinstance(key.fileobj, socket.socket)
                        self._read_head(key.fileobj)
                now = time.monotonic()
                while self._pending and next(iter(self._pending.values()))[0] <= now:
                    self._drop(next(iter(self._pending)))
        finally:
            for conn in list(self._pending):
                self._drop(conn)
            self._selector.close()
            self._stopped.set()

    def _accept(self, bound: int) -> None:
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                conn, address = self.socket.accept()
            except OSError:  # none left; or out of files, or the client gave up: next turn
                return
            if self.tls is not None:
                conn.setblocking(True)
                self.process_request(conn, address)
                continue
            if len(self._pending) >= bound:
                # A slow head is the cheapest client to drop: a scraper sends its head at once.
                self._drop(next(iter(self._pending)))
            conn.setblocking(False)
            self._pending[conn] = (time.monotonic() + HEADER_TIMEOUT, bytearray(), address)
            self._selector.register(conn, selectors.EVENT_READ)

    def _read_head(self, conn: socket.socket) -> None:
        deadline, head, address = self._pending[conn]
        try:
            data = conn.recv(MAX_HEAD - len(head))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client hung up
            self._drop(conn)
            return
        start = max(0, len(head) - 3)
        head += data
        ended = head.find(b"\n\r\n", start) >= 0 or head.find(b"\n\n", start) >= 0
        if not ended and len(head) < MAX_HEAD:
            return
        self._selector.unregister(conn)
        del self._pending[conn]
        conn.setblocking(True)
        self.heads[conn] = bytes(head)
        self._admit(conn, address, max(0.0, deadline - time.monotonic()))

    def _drop(self, conn: socket.socket) -> None:
        self._selector.unregister(conn)
        del self._pending[conn]
        conn.close()

    def process_request(self, request: Any, client_address: Any) -> None:
        self._admit(request, client_address, HEADER_TIMEOUT)

    def _admit(self, request: Any, client_address: Any, head_seconds: float) -> None:
        with self._deadlines_lock:
            crowded = len(self._deadlines) >= MAX_CONNECTIONS
            oldest = next((c for c, (_, done) in self._deadlines.items() if not done), None)
            if crowded and oldest is not None:
                self._deadlines.pop(oldest)
                _cut(oldest)
        if crowded and oldest is None:
            self.shutdown_request(request)
            return
        self.watch(request, head_seconds, head_done=False)
        try:
            super().process_request(request, client_address)
        except Exception:  # no thread to be had: that client alone fails, the loop goes on
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def shutdown(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._waker.send(b"x")
        self._stopped.wait()

    def shutdown_request(self, request: Any) -> None:
        with self._deadlines_lock:
            self._deadlines.pop(request, None)
        self.heads.pop(request, None)
        super().shutdown_request(request)

    def _reap(self) -> None:
        while not self._closed.wait(_REAP_EVERY):
            now = time.monotonic()
            with self._deadlines_lock:
                late = [c for c, (deadline, _) in self._deadlines.items() if deadline < now]
                for conn in late:
                    del self._deadlines[conn]
            for conn in late:
                _cut(conn)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()
        self._wake_loop.close()
        self._waker.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up or fails the TLS handshake is not the exporter's error.
        client = client_address[0] if client_address else None
        log.debug("connection error", extra=logs.fields(client=client))

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the request thread: TLS starts here, so a slow handshake blocks nobody."""
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            first = request.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if first != b"\x16":  # not a TLS handshake record: plain HTTP, most likely
            with contextlib.suppress(OSError):
                request.sendall(_PLAIN_HTTP_TO_TLS)
            return
        context = self.tls.current  # read once: a reload may swap it meanwhile
        tls = context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        with self._deadlines_lock:  # the wrapper took the socket over
            self._deadlines[tls] = self._deadlines.pop(request, (time.monotonic(), False))
        try:
            super().finish_request(tls, client_address)
        finally:
            self.shutdown_request(tls)


def _cut(conn: socket.socket) -> None:
    """End a connection from another thread: its handler's blocked read returns at once."""
    with contextlib.suppress(OSError):  # not SSLSocket's shutdown: no TLS state touched
        socket.socket.shutdown(conn, socket.SHUT_RDWR)


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6
    dual_stack = False

    def server_bind(self) -> None:
        # Set either way: the kernel's default (net.ipv6.bindv6only) differs between hosts.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, not self.dual_stack)
        super().server_bind()


class _DualStackServer(_ThreadingServer6):
    dual_stack = True


def parse_listen_address(text: str) -> tuple[str, int]:
    """`:9879`, `0.0.0.0:9879`, `[::1]:9879`, `[::]:9879`; ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    name = host[1:-1] if bracketed else host
    if (
        not sep
        or not port.isdigit()
        or not 0 <= int(port) <= 65535
        or "[" in name
        or "]" in name
        or (":" in name and not bracketed)  # an IPv6 address needs its brackets, as in Go
    ):
        raise ValueError(f"{text!r} is not HOST:PORT")
    return name, int(port)


def _without_body_for_head(app: WsgiApp) -> WsgiApp:
    """HEAD gets the headers GET would get (Content-Length included) and no body."""

    def wrapped(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        body = app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "HEAD":
            return body
        close = getattr(body, "close", None)
        if close is not None:
            close()
        return []

    return wrapped


def _make_server(host: str, port: int, app: WsgiApp) -> _ThreadingServer:
    """`:PORT` and `[::]:PORT` listen on every IPv6 and IPv4 address (IPv4 alone on a host
    without IPv6), as node_exporter does; any other host on that address alone."""
    if host in {"", "::"}:
        try:
            return make_server(
                "::", port, app, server_class=_DualStackServer, handler_class=_QuietHandler
            )
        except OSError as exc:
            if host == "::" or exc.errno not in _NO_IPV6:
                raise
        host = "0.0.0.0"  # noqa: S104 - an exporter listens on all interfaces by default
    server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
    return make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)


# What socket() and bind() say on a host whose kernel or interfaces have no IPv6.
_NO_IPV6 = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT}


class TlsContext:
    """The TLS context each new connection is wrapped with. A reload swaps `current` whole (one
    reference assignment), so new connections get the new certificate, versions and client CAs
    while open ones keep the context they started with."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.current = context


class WebServer:
    """Serves the WSGI app on a background thread until stop()."""

    def __init__(
        self, app: WsgiApp, address: tuple[str, int], tls: TlsContext | None = None
    ) -> None:
        host, port = address
        self._server = _make_server(host, port, _without_body_for_head(app))
        self._server.tls = tls
        self._thread = threading.Thread(target=self._server.serve_forever, name="web", daemon=True)

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
