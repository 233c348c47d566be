"""End to end: every dashboard query answers from a real Prometheus scraping the demo exporter,
and the landing page renders in real headless Chromium."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from exporter.simulator import Simulator
from tests.conftest import register_test_token, require_tool
from tests.harness import sim_project
from tests.servers import Exporter, Prometheus

ROOT = Path(__file__).resolve().parent.parent
# Every project of both exporters: healthy demo projects and troubled ones.
VARIABLES = {"job": "x-usage-exporter", "project": ".+", "__range": "1h"}
pytestmark = pytest.mark.e2e


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "grafana_generate_e2e", ROOT / "grafana" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = Exporter("--demo")
    try:
        server.wait_ready()
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def troubled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second exporter whose projects have problems, so that the panels that show problems
    have something to show: an overview-shape answer (fields missing), an answer with an
    impossible cap_reset_day and errors beside its data, and a refused token."""
    tmp = tmp_path_factory.mktemp("troubled")
    odd = sim_project("3004", "token-e2e-odd-cccccccccccc", cap_reset_day=123, api_errors=("x",))
    simulator = Simulator(
        [sim_project("3003", "token-e2e-overview-aaaaaaaa", shape="overview"), odd]
    )
    simulator.start()
    (tmp / "good").write_text("token-e2e-overview-aaaaaaaa")
    (tmp / "odd").write_text("token-e2e-odd-cccccccccccc")
    (tmp / "revoked").write_text(register_test_token("token-e2e-revoked-bbbbbbbbbb"))
    config = tmp / "config.yml"
    config.write_text(
        f"api_base_url: {simulator.url}\npoll_interval: 2s\n"
        "projects: [{name: overview, bearer_token_file: good},"
        " {name: odd, bearer_token_file: odd},"
        " {name: revoked, bearer_token_file: revoked}]\n"
    )
    # With --history.file, so that the health dashboard's history panels have data.
    server = Exporter("--config.file", str(config), "--history.file", str(tmp / "history.json"))
    try:
        server.wait_ready()
        yield server.url
    finally:
        server.stop()
        simulator.stop()


@pytest.fixture(scope="module")
def prometheus(
    demo: str, troubled: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    tmp = tmp_path_factory.mktemp("prometheus")
    targets = ", ".join(f"'{url.removeprefix('http://')}'" for url in (demo, troubled))
    server = Prometheus(
        tmp,
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: x-usage-exporter\n"
        f"    static_configs: [{{targets: [{targets}]}}]\n",
    )
    try:
        deadline = time.monotonic() + 30
        # Enough scrapes for rate() over the dashboards' 1m rate interval.
        while time.monotonic() < deadline:
            counts = server.query("count_over_time(xapi_exporter_build_info[1m])")
            if counts and float(counts[0]["value"][1]) >= 4:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"Prometheus did not scrape the demo: {server.log.read_text()}")
        yield server
    finally:
        server.stop()


def test_every_panel_query_returns_data(prometheus: Prometheus) -> None:
    generate = _generator()
    empty = []
    queries = generate.panel_queries()
    assert len(queries) > 30
    for query in queries:
        expr = generate.expand_variables(query.expr, {**generate.SAMPLE_VARIABLES, **VARIABLES})
        if not prometheus.query(expr):
            empty.append(f"{query.dashboard} / {query.panel}: {expr}")
    assert not empty, "\n".join(empty)


def test_every_variable_query_finds_its_label(prometheus: Prometheus) -> None:
    generate = _generator()
    for variable in generate.variable_queries():
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable.query)
        assert match is not None, variable.query
        selector = generate.expand_variables(match[1], {"job": ".+", "project": ".+"})
        result = prometheus.query(selector)
        assert result and all(match[2] in series["metric"] for series in result), variable


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_tool("chromium")
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"chromium-profile-{os.getpid()}"
    try:
        return subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_the_landing_page_renders_in_chromium(demo: str, tmp_path: Path) -> None:
    dom = _chromium("--dump-dom", f"{demo}/")
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    for text in (
        "production",
        "research",
        "of cap",
        "Spend:",
        "budget $20,000",
        "Daily Posts",
        "today ",
        " reset<",
        "80% band",
        "cap reached by",
        "over the budget",
    ):
        assert text in page, text
    assert page.count("<svg") >= 6 and "<script" not in page

    for name, size in (("landing.png", "1200,1500"), ("landing-phone.png", "390,1600")):
        shot = tmp_path / name
        result = _chromium(f"--screenshot={shot}", f"--window-size={size}", f"{demo}/")
        assert result.returncode == 0, result.stderr[-2000:]
        assert _png_size(shot) == tuple(int(v) for v in size.split(","))
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
        if os.environ.get("UPDATE_SCREENSHOT"):
            shutil.copy(shot, ROOT / "docs" / name)
