"""Hostile input over real loopback (docs/security.md): an upstream that trickles, bombs and lies
to the exporter process, and the bounds that hold it: memory, time, an answering service, polls
that resume, a quick shutdown."""

from __future__ import annotations

import json
import signal
import statistics
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from exporter.client import MAX_SHOWN_CHARS
from exporter.simulator import Fault, SimProject, Simulator
from tests.conftest import find_token_fragments
from tests.harness import sim_project
from tests.servers import Exporter
from tests.test_faults import QUIET, USAGE_PATH, Metrics, _config, scrape

MIB = 1024 * 1024
PROJECTS = 20
# mode -> the reason its polls must fail with
MODES = {
    "trickle": "timeout",  # the usual answer, a byte every 0.3 s: it would take an hour
    "gzip_bomb": "too_large",  # 256 KiB of gzip that inflates to 256 MiB
    "huge": "too_large",  # a 20 MB answer
    "many_apps": "too_large",  # 150 Apps
    "long_id": "too_large",  # a 100,000-character project_id
    "echo_token": "unauthorized",  # a 401 whose detail echoes the Authorization header
}
RSS_CEILING = 100 * MIB
# docs/security.md has the figures measured on a quiet machine (p99 well under 100 ms); on a
# shared CI runner the bound asserted here is that scrapes stay interactive.
SCRAPE_P99_CEILING = 1.0
SHUTDOWN_CEILING = 5.0
ATTACK_SECONDS = 8.0  # at least: every hostile project fails at least ten polls


def _token(index: int) -> str:
    return f"token-Hs{index:02d}Kq-" + "b" * 24


@cache
def gzip_bomb() -> bytes:
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(MIB)
    return b"".join(deflate.compress(chunk) for _ in range(256)) + deflate.flush()


@cache
def huge_answer() -> bytes:
    return b'{"data": {"project_usage": "1", "pad": "' + b"x" * (20 * MIB) + b'"}}'


def _ok(body: object) -> tuple[int, dict[str, str], bytes]:
    return 200, {"content-type": "application/json"}, json.dumps(body).encode()


class HostileSimulator(Simulator):
    """Answers the usage requests of each project in `modes` the hostile way while `hostile` is
    set; every other request as the simulator does."""

    def __init__(self, projects: list[SimProject], modes: dict[str, str], **options: Any) -> None:
        super().__init__(projects, **options)
        self.modes = modes
        self.hostile = threading.Event()

    def handle(self, raw_path: str, authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        token = (authorization or "").removeprefix("Bearer ").strip()
        project = self.projects.get(token)
        mode = self.modes.get(project.project_id) if project is not None else None
        if mode is None or not self.hostile.is_set() or urlsplit(raw_path).path != USAGE_PATH:
            return super().handle(raw_path, authorization)
        if mode == "gzip_bomb":
            headers = {"content-type": "application/json", "content-encoding": "gzip"}
            return 200, headers, gzip_bomb()
        if mode == "huge":
            return 200, {"content-type": "application/json"}, huge_answer()
        day = [{"date": "2026-11-01T00:00:00.000Z", "usage": "1"}]
        if mode == "many_apps":
            apps = [{"client_app_id": str(i), "usage": day} for i in range(150)]
            return _ok({"data": {"project_usage": "150", "daily_client_app_usage": apps}})
        if mode == "long_id":
            return _ok({"data": {"project_usage": "1", "project_id": "1" * 100_000}})
        if mode == "echo_token":
            detail = f"bad header Authorization: {authorization} \x1b[31m" + "x" * 10_000
            body = {"title": "Unauthorized", "type": "about:blank", "detail": detail}
            return 401, {"content-type": "application/problem+json"}, json.dumps(body).encode()
        return super().handle(raw_path, authorization)  # trickle: the simulator's own fault


def peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        pytest.skip("needs /proc/<pid>/status (Linux)")
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM line")


@dataclass
class Attack:
    simulator: HostileSimulator
    exporter: Exporter
    names: dict[str, str]  # project name -> mode
    tokens: set[str]
    failing: Metrics  # once every hostile project showed its reason
    page: str  # the landing page then
    scrape_seconds: list[float]  # valid scrapes during the attack
    peak: int  # the exporter's peak resident memory, in bytes
    recovered: Metrics  # once every project polled well again


@pytest.fixture(scope="module")
def attack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attack]:
    """20 projects polled every 500 ms; all but the last two answered in a hostile way; then the
    upstream heals."""
    now = datetime.now(UTC)
    modes = list(MODES)
    projects = [sim_project(f"{i + 1}00{i + 1}", _token(i), credits=None) for i in range(PROJECTS)]
    hostile = {p.project_id: modes[i % len(modes)] for i, p in enumerate(projects[:-2])}
    simulator = HostileSimulator(projects, hostile, clock=lambda: now, window_seconds=5.0)
    simulator.start()
    names = {p.project_id: f"p{i:02d}" for i, p in enumerate(projects)}
    by_name = {names[pid]: mode for pid, mode in hostile.items()}
    tmp = tmp_path_factory.mktemp("security")
    config = _config(tmp, simulator, names, f"poll_interval: 500ms\nrequest_timeout: 1s\n{QUIET}")
    gzip_bomb(), huge_answer()  # built before the clock starts
    exporter = Exporter("--config.file", str(config))
    try:
        exporter.wait_ready()
        for project_id, mode in hostile.items():
            if mode == "trickle":
                simulator.set_fault(Fault.TRICKLE, project_id=project_id, delay=0.3)
        simulator.hostile.set()
        attacked_at = time.monotonic()
        seconds: list[float] = []
        deadline = time.monotonic() + 30
        while True:
            started = time.monotonic()
            answer = httpx.get(f"{exporter.url}/metrics", timeout=5)
            seconds.append(time.monotonic() - started)
            assert answer.status_code == 200
            failing = Metrics.parse(answer.text)
            pending = [
                (name, mode)
                for name, mode in by_name.items()
                if failing.get("xapi_exporter_poll_error", project=name, reason=MODES[mode]) != 1
            ]
            if not pending and time.monotonic() > attacked_at + ATTACK_SECONDS:
                break
            assert time.monotonic() < deadline, (pending, len(seconds), answer.text[-3000:])
            time.sleep(0.02)
        page = httpx.get(f"{exporter.url}/", timeout=5).text
        peak = peak_rss(exporter.proc.pid)
        simulator.hostile.clear()
        simulator.clear_faults()
        deadline = time.monotonic() + 30
        while True:
            recovered = scrape(exporter)
            if all(
                recovered.get("xapi_exporter_poll_success", project=name) == 1 for name in by_name
            ):
                break
            assert time.monotonic() < deadline, exporter.log.read_text()[-3000:]
            time.sleep(0.1)
        tokens = {p.token for p in projects}
        yield Attack(simulator, exporter, by_name, tokens, failing, page, seconds, peak, recovered)
    finally:
        exporter.stop()
        simulator.stop()


@pytest.mark.parametrize("mode", list(MODES))
def test_a_hostile_answer_fails_the_poll_under_its_reason_and_keeps_the_service(
    attack: Attack, mode: str
) -> None:
    names = [name for name, m in attack.names.items() if m == mode]
    assert names
    for name in names:
        assert attack.failing.get("xapi_exporter_poll_success", project=name) == 0
        errors = attack.failing.total(
            "xapi_exporter_upstream_errors_total", project=name, reason=MODES[mode]
        )
        assert errors >= 1, name
    # The two projects that were answered well kept polling well throughout.
    for name in ("p18", "p19"):
        assert attack.failing.get("xapi_exporter_poll_success", project=name) == 1


def test_the_exporter_stays_small_and_quick_whatever_the_upstream_sends(attack: Attack) -> None:
    assert attack.peak < RSS_CEILING, f"peak RSS {attack.peak / MIB:.0f} MiB"
    p99 = statistics.quantiles(attack.scrape_seconds, n=100)[98]
    assert p99 < SCRAPE_P99_CEILING, f"valid scrape p99 {p99 * 1000:.0f} ms"


def test_polling_resumes_once_the_upstream_heals(attack: Attack) -> None:
    for name in attack.names:
        assert attack.recovered.get("xapi_exporter_poll_success", project=name) == 1


def test_an_echoed_token_and_a_long_detail_never_reach_the_page(attack: Attack) -> None:
    assert find_token_fragments(attack.page, attack.tokens) == []
    assert "\x1b" not in attack.page
    assert "x" * (MAX_SHOWN_CHARS + 1) not in attack.page
    assert len(attack.page) < 256 * 1024


def test_shutdown_ends_within_5_seconds_while_every_poll_trickles(
    tmp_path: Path,
) -> None:
    projects = [sim_project(f"{i}00{i}", _token(50 + i), credits=None) for i in range(1, 4)]
    simulator = Simulator(projects)
    simulator.start()
    try:
        names = {p.project_id: f"t{i}" for i, p in enumerate(projects)}
        # A long timeout: only the shutdown itself may cut these polls short.
        extra = f"poll_interval: 1s\nrequest_timeout: 1m\n{QUIET}"
        config = _config(tmp_path, simulator, names, extra)
        exporter = Exporter("--config.file", str(config))
        try:
            exporter.wait_ready()
            simulator.set_fault(Fault.TRICKLE, delay=0.5)
            before = simulator.request_count(USAGE_PATH)
            deadline = time.monotonic() + 10
            while simulator.request_count(USAGE_PATH) < before + len(projects):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.5)  # the answer is trickling
            started = time.monotonic()
            exporter.proc.send_signal(signal.SIGTERM)
            code = exporter.proc.wait(timeout=30)
            took = time.monotonic() - started
        finally:
            exporter.stop()
        assert code == 0
        assert took < SHUTDOWN_CEILING, f"shutdown took {took:.1f}s"
    finally:
        simulator.stop()
