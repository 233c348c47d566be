"""HTTP endpoints over real loopback: metrics, health, readiness, reload, landing page."""

from __future__ import annotations

import gzip
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.web import (
    App,
    MetricsCache,
    Routes,
    WebServer,
    WsgiApp,
    gzip_accepted,
    parse_listen_address,
)
from tests.harness import Harness, running, sim_project

TOKEN = "token-web-aaaaaaaaaaaaaaaaaaaaaaaa"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Harness, str, list[str]]]:
    reloads: list[str] = []

    def reload() -> str | None:
        reloads.append("called")
        return None if len(reloads) == 1 else "projects[0].name: must be a non-empty string"

    with running([sim_project("1001", TOKEN)], tmp_path) as h:
        h.start()
        routes = Routes("/metrics", lambda: h.poller.ready, reload)
        app = App(routes, MetricsCache(h.registry, h.store, h.clock), h.store, h.clock)
        server = WebServer(app, ("127.0.0.1", 0))
        server.start()
        try:
            yield h, f"http://127.0.0.1:{server.port}", reloads
        finally:
            server.stop()


def test_readiness_waits_for_the_first_poll(served: tuple[Harness, str, list[str]]) -> None:
    h, url, _ = served
    assert httpx.get(f"{url}/-/healthy").status_code == 200
    assert httpx.get(f"{url}/-/ready").status_code == 503
    h.poll()
    ready = httpx.get(f"{url}/-/ready")
    assert (ready.status_code, ready.text) == (200, "Ready\n")


def test_metrics_serve_text_openmetrics_and_gzip(served: tuple[Harness, str, list[str]]) -> None:
    h, url, _ = served
    h.poll()
    plain = httpx.get(f"{url}/metrics", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'xapi_project_posts_consumed{project="p0",project_id="1001"}' in plain.text
    om = httpx.get(
        f"{url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")
    raw = httpx.get(f"{url}/metrics", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.text == plain.text  # httpx decodes; the bytes were gzip on the wire
    assert gzip.decompress(gzip.compress(raw.content)) == raw.content


def test_metrics_follow_the_store_not_a_stale_cache(served: tuple[Harness, str, list[str]]) -> None:
    h, url, _ = served
    h.poll()
    first = httpx.get(f"{url}/metrics").text
    h.simulator.project("1001").add_posts(h.clock.now, 12_345)
    assert httpx.get(f"{url}/metrics").text == first  # no poll, no change
    h.poll()
    expected = h.simulator.project("1001").consumed(h.clock.now)
    assert _consumed(httpx.get(f"{url}/metrics").text) == expected == _consumed(first) + 12_345


def _consumed(exposition: str) -> float:
    for family in text_string_to_metric_families(exposition):
        if family.name == "xapi_project_posts_consumed":
            return float(family.samples[0].value)
    raise AssertionError("xapi_project_posts_consumed is missing")


def test_reload_needs_post_and_reports_failure(served: tuple[Harness, str, list[str]]) -> None:
    _, url, reloads = served
    for method in ("GET", "PUT", "DELETE"):
        refused = httpx.request(method, f"{url}/-/reload")
        assert (refused.status_code, refused.headers["allow"]) == (405, "POST"), method
    assert reloads == []
    ok = httpx.post(f"{url}/-/reload")
    assert (ok.status_code, ok.text) == (200, "config reloaded\n")
    bad = httpx.post(f"{url}/-/reload")
    assert bad.status_code == 500
    assert bad.text == "reload failed: projects[0].name: must be a non-empty string\n"


def test_the_landing_page_shows_the_cycle_and_never_the_token(
    served: tuple[Harness, str, list[str]],
) -> None:
    h, url, _ = served
    h.poll()
    page = httpx.get(f"{url}/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<svg" in page.text and "<script" not in page.text
    assert 'href="/metrics"' in page.text
    assert "p0" in page.text and "1001" in page.text and "of cap" in page.text
    assert TOKEN not in page.text and TOKEN[6:14] not in page.text
    assert httpx.get(f"{url}/nope").status_code == 404
    assert httpx.delete(f"{url}/metrics").status_code == 405


def test_the_landing_page_says_when_the_cycle_ended(served: tuple[Harness, str, list[str]]) -> None:
    h, url, _ = served
    h.poll()
    h.clock.now = datetime(2026, 12, 10, 0, 1, tzinfo=UTC)
    assert "has ended" in httpx.get(f"{url}/").text


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (":9879", ("", 9879)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9879", ("::1", 9879)),
        ("[::]:9879", ("::", 9879)),
    ],
)
def test_listen_addresses_parse(text: str, parsed: tuple[str, int]) -> None:
    assert parse_listen_address(text) == parsed


@pytest.mark.parametrize(
    "text", ["9879", "host:", "host:http", "h:70000", "::1:9879", "[::1:9879", "[[::1]]:9879"]
)
def test_bad_listen_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        parse_listen_address(text)


@pytest.mark.parametrize(
    ("accept", "served_as"),
    [
        ("application/openmetrics-text; version=abc", "text/plain; version=0.0.4"),
        ("application/openmetrics-text; version=9.9.9", "text/plain; version=0.0.4"),
        ("application/openmetrics-text", "application/openmetrics-text; version=1.0.0"),
        ("text/plain;version=1.0.0;escaping=allow-utf-8", "text/plain; version=0.0.4"),
        (
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
            "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
            "application/openmetrics-text; version=1.0.0",
        ),
    ],
)
def test_any_accept_header_gets_one_of_the_two_served_formats(
    served: tuple[Harness, str, list[str]], accept: str, served_as: str
) -> None:
    _, url, _ = served
    answer = httpx.get(f"{url}/metrics", headers={"Accept": accept})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(served_as)


def test_a_thousand_accept_versions_leave_two_renderings_in_the_cache(tmp_path: Path) -> None:
    with running([sim_project("1001", TOKEN)], tmp_path) as h:
        h.start()
        h.poll()
        cache = MetricsCache(h.registry, h.store, h.clock)
        types = {
            cache.render(f"application/openmetrics-text; version=1.0.{i}")[1] for i in range(1000)
        }
        types |= {cache.render(f"text/plain; version={i}")[1] for i in range(1000)}
    assert types <= {
        "text/plain; version=0.0.4; charset=utf-8",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    }


def test_a_demo_reload_says_that_it_reloaded_nothing(tmp_path: Path) -> None:
    reloads: list[str] = []

    def reload() -> str | None:
        reloads.append("called")
        return None

    with running([sim_project("1001", TOKEN)], tmp_path) as h:
        h.start()
        routes = Routes("/metrics", lambda: True, reload, "--demo has no config file to re-read")
        app = App(routes, MetricsCache(h.registry, h.store, h.clock), h.store, h.clock)
        server = WebServer(app, ("127.0.0.1", 0))
        server.start()
        try:
            answer = httpx.post(f"http://127.0.0.1:{server.port}/-/reload")
        finally:
            server.stop()
    assert answer.status_code == 409
    assert answer.text == "nothing reloaded: --demo has no config file to re-read\n"
    assert reloads == []


def _raw_exchange(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Head and body bytes exactly as the server sent them, up to its closing the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("path", ["/metrics", "/", "/-/healthy", "/nope"])
def test_head_sends_the_headers_of_get_and_no_body(
    served: tuple[Harness, str, list[str]], path: str
) -> None:
    h, url, _ = served
    h.poll()
    port = int(url.rsplit(":", 1)[1])
    request = f"{{}} {path} HTTP/1.0\r\nAccept-Encoding: identity\r\n\r\n"
    get_head, get_body = _raw_exchange(port, request.format("GET").encode())
    head_head, head_body = _raw_exchange(port, request.format("HEAD").encode())
    assert get_body and head_body == b""
    assert head_head.split(b"\r\n")[0] == get_head.split(b"\r\n")[0]
    assert f"Content-Length: {len(get_body)}".encode() in head_head


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("identity;q=1, gzip;q=0.5", True),
        ("*", True),
        ("GZIP;Q=0.001", True),
        ("gzip;q=0", False),
        ("identity, gzip;q=0", False),
        ("gzip;q=0.0, *;q=1", False),
        ("*;q=0", False),
        ("br", False),
        ("identity", False),
        ("", False),
        ("gzip;q=x", False),
    ],
)
def test_gzip_follows_the_accept_encoding_q_values(
    served: tuple[Harness, str, list[str]], accept_encoding: str, gzipped: bool
) -> None:
    _, url, _ = served
    assert gzip_accepted(accept_encoding) is gzipped
    answer = httpx.get(f"{url}/metrics", headers={"Accept-Encoding": accept_encoding})
    assert answer.status_code == 200
    assert ("content-encoding" in answer.headers) is gzipped
    assert answer.headers["vary"] == "Accept, Accept-Encoding"
    assert "xapi_exporter_build_info" in answer.text


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _answers(host: str, port: int) -> bool:
    try:
        return httpx.get(f"http://{host}:{port}/-/healthy", timeout=5).status_code == 200
    except httpx.ConnectError:
        return False


def _healthy(_environ: object, start_response: Callable[..., object]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "8")])
    return [b"Healthy\n"]


@pytest.mark.parametrize(
    ("listen", "on_ipv6", "on_ipv4"),
    [
        (":0", True, True),
        ("[::]:0", True, True),
        ("[::1]:0", True, False),
        ("127.0.0.1:0", False, True),
    ],
)
def test_the_listen_address_decides_the_address_families(
    listen: str, on_ipv6: bool, on_ipv4: bool
) -> None:
    ipv6 = _has_ipv6_loopback()
    if not ipv6 and ":" in listen.rpartition(":")[0]:
        pytest.skip("this machine has no IPv6 loopback (::1)")
    app: WsgiApp = _healthy
    server = WebServer(app, parse_listen_address(listen))
    server.start()
    try:
        if ipv6:  # without it, `:PORT` falls back to IPv4 alone: the check below still holds
            assert _answers("[::1]", server.port) is on_ipv6
        assert _answers("127.0.0.1", server.port) is on_ipv4
    finally:
        server.stop()
