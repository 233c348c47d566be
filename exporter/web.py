"""HTTP endpoints: /metrics from the snapshot, health, readiness, reload and the landing page."""

from __future__ import annotations

import gzip
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter import landing
from exporter.snapshot import Store

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Environ = dict[str, Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class Routes:
    telemetry_path: str
    ready: Callable[[], bool]
    reload: Callable[[], str | None]  # None on success, else why it failed


class MetricsCache:
    """Renders the exposition once per store change and UTC day, whatever the scrape rate.

    What the collector yields depends only on the store and on the UTC date (cycle ends and day
    boundaries both fall at 00:00 UTC), so that pair is an exact cache key.
    """

    def __init__(
        self, registry: CollectorRegistry, store: Store, clock: Callable[[], datetime]
    ) -> None:
        self._registry = registry
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._key: tuple[int, object] | None = None
        self._rendered: dict[str, tuple[bytes, bytes]] = {}

    def render(self, accept: str) -> tuple[bytes, str, bytes]:
        """(body, content type, gzipped body) for an Accept header."""
        encoder, content_type = choose_encoder(accept)
        key = (self._store.generation, self._clock().date())
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
            log.exception("request failed path=%s", path)
            return _text(start_response, "500 Internal Server Error", "internal error\n")

    def _dispatch(
        self, path: str, method: str, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes]:
        if path == "/-/reload":
            if method not in {"POST", "PUT"}:
                return _text(
                    start_response,
                    "405 Method Not Allowed",
                    "use POST to reload\n",
                    [("Allow", "POST, PUT")],
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
            headers = [("Content-Type", content_type), ("Cache-Control", "no-store")]
            if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
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
            page = landing.render(
                self._store.states, self._clock(), self._routes.telemetry_path
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


class _QuietHandler(WSGIRequestHandler):
    # An idle or trickling client must not hold a thread for ever.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 refuses connections when many scrapers arrive at once.
    request_queue_size = 128
    ssl_context: ssl.SSLContext | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up or fails the TLS handshake is not the exporter's error.
        log.debug("connection error client=%s", client_address[0] if client_address else "?")

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        if self.ssl_context is not None:
            # The handshake runs in the request thread, so a slow client blocks nobody.
            conn = self.ssl_context.wrap_socket(
                conn, server_side=True, do_handshake_on_connect=False
            )
        return conn, addr


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


def parse_listen_address(text: str) -> tuple[str, int]:
    """`:9879`, `0.0.0.0:9879`, `[::1]:9879`; ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    host = host.strip("[]")
    return host, int(port)


class WebServer:
    """Serves the WSGI app on a background thread until stop()."""

    def __init__(
        self, app: WsgiApp, address: tuple[str, int], ssl_context: ssl.SSLContext | None = None
    ) -> None:
        host, port = address
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        self._server = make_server(
            host or "0.0.0.0",  # noqa: S104 - an exporter listens on all interfaces by default
            port,
            app,
            server_class=server_class,
            handler_class=_QuietHandler,
        )
        self._server.ssl_context = ssl_context
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
