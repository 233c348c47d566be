"""HTTP endpoints over real loopback: metrics, health, readiness, reload, landing page."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.web import App, MetricsCache, Routes, WebServer, parse_listen_address
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
    assert httpx.get(f"{url}/-/reload").status_code == 405
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
    [(":9879", ("", 9879)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:9879", ("::1", 9879))],
)
def test_listen_addresses_parse(text: str, parsed: tuple[str, int]) -> None:
    assert parse_listen_address(text) == parsed


@pytest.mark.parametrize("text", ["9879", "host:", "host:http", "h:70000"])
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
