"""Hostile input over real loopback (docs/security.md): an upstream that trickles, bombs and lies
to the exporter process, and the bounds that hold it: memory, time, an answering service, polls
that resume, a quick shutdown."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from exporter import poller as poller_module
from exporter import webconfig
from exporter.client import MAX_SHOWN_CHARS, RATE_LIMIT_WINDOW, RateLimit, read_token
from exporter.config import MAX_TOKEN_FILE_BYTES, TokenSource
from exporter.errors import ConfigError, TokenError
from exporter.simulator import Fault, SimProject, Simulator
from exporter.web import HEADER_TIMEOUT, MAX_CONNECTIONS, pending_bound
from tests.conftest import find_token_fragments
from tests.harness import FakeClock, Harness, sim_project
from tests.servers import Exporter
from tests.test_faults import QUIET, USAGE_PATH, Metrics, _config, eventually, scrape

MIB = 1024 * 1024
PROJECTS = 20
# mode -> the reason its polls must fail with
MODES = {
    "trickle": "timeout",  # the usual answer, a byte every 0.3 s: it would take an hour
    "gzip_bomb": "too_large",  # 256 KiB of gzip that inflates to 256 MiB
    "huge": "too_large",  # an 8 MB answer
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


# Scrapes a URL every 50 ms for N seconds; prints the durations as JSON.
SCRAPER = """
import json, sys, time, httpx
url, end, seconds = sys.argv[1], time.monotonic() + float(sys.argv[2]), []
with httpx.Client(timeout=5) as client:
    while time.monotonic() < end:
        began = time.monotonic()
        client.get(url).raise_for_status()
        seconds.append(time.monotonic() - began)
        time.sleep(0.05)
print(json.dumps(seconds))
"""


def _token(index: int) -> str:
    return f"token-Hs{index:02d}Kq-" + "b" * 24


@cache
def gzip_bomb() -> bytes:
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(MIB)
    return b"".join(deflate.compress(chunk) for _ in range(256)) + deflate.flush()


@cache
def huge_answer() -> bytes:
    return b'{"data": {"project_usage": "1", "pad": "' + b"x" * (8 * MIB) + b'"}}'


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


@contextmanager
def hostile_exporter(
    tmp: Path, count: int, poll_interval: str, *, hostile: bool = True
) -> Iterator[tuple[HostileSimulator, Exporter, dict[str, str]]]:
    """An exporter process polling `count` projects every `poll_interval`, all but the last two
    answered in a hostile way (each in one of MODES, in turn) when `hostile`, the attack already
    on: the simulator, the exporter and the project name of each hostile project with its mode."""
    gzip_bomb(), huge_answer()  # built before the clock starts
    now = datetime.now(UTC)
    modes = list(MODES)
    projects = [sim_project(f"{i + 1}00{i + 1}", _token(i), credits=None) for i in range(count)]
    plan = {p.project_id: modes[i % len(modes)] for i, p in enumerate(projects[:-2])}
    simulator = HostileSimulator(
        projects, plan if hostile else {}, clock=lambda: now, window_seconds=5.0
    )
    simulator.start()
    names = {p.project_id: f"p{i:02d}" for i, p in enumerate(projects)}
    extra = f"poll_interval: {poll_interval}\nrequest_timeout: 1s\n{QUIET}"
    exporter = Exporter("--config.file", str(_config(tmp, simulator, names, extra)))
    try:
        exporter.wait_ready()
        if hostile:
            for project_id, mode in plan.items():
                if mode == "trickle":
                    simulator.set_fault(Fault.TRICKLE, project_id=project_id, delay=0.3)
            simulator.hostile.set()
        yield simulator, exporter, {names[pid]: mode for pid, mode in plan.items() if hostile}
    finally:
        exporter.stop()
        simulator.stop()


@pytest.fixture(scope="module")
def attack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attack]:
    """20 projects polled every 500 ms; all but the last two answered in a hostile way; then the
    upstream heals."""
    tmp = tmp_path_factory.mktemp("security")
    with hostile_exporter(tmp, PROJECTS, "500ms") as (simulator, exporter, by_name):
        attacked_at = time.monotonic()
        # The valid scraper is a process of its own: this one also runs the attacker.
        scraper = subprocess.Popen(
            [sys.executable, "-c", SCRAPER, f"{exporter.url}/metrics", str(ATTACK_SECONDS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while True:
            answer = httpx.get(f"{exporter.url}/metrics", timeout=5)
            assert answer.status_code == 200
            failing = Metrics.parse(answer.text)
            pending = [
                (name, mode)
                for name, mode in by_name.items()
                if failing.get("xapi_exporter_poll_error", project=name, reason=MODES[mode]) != 1
            ]
            if not pending and time.monotonic() > attacked_at + ATTACK_SECONDS:
                break
            assert time.monotonic() < deadline, (pending, answer.text[-3000:])
            time.sleep(0.05)
        seconds = json.loads(scraper.communicate(timeout=60)[0])
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
        tokens = set(simulator.projects)
        yield Attack(simulator, exporter, by_name, tokens, failing, page, seconds, peak, recovered)


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


# -- the operator's files ------------------------------------------------------------------------

BOMB_LEVELS = 6  # 9**6 = 531,441 copies of the innermost list, from a 500-byte document


def _yaml_bomb(key: str, levels: int = BOMB_LEVELS) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"l{level}: &l{level} [{refs}]")
    lines.append(f"{key}: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def _check_config(config: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--config.file", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, time.monotonic() - started


@pytest.mark.parametrize("key", ["api_base_url", "cap_reset_day_means", "credits", "poll_interval"])
def test_a_yaml_alias_bomb_is_refused_in_a_short_message(tmp_path: Path, key: str) -> None:
    config = tmp_path / "config.yml"
    config.write_text(_yaml_bomb(key) + "projects: [{name: p, bearer_token_env: HOME}]\n")
    result, took = _check_config(config)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert f"{key}:" in result.stderr
    assert len(result.stderr) < 4096
    assert took < 10


def test_a_document_with_too_many_aliases_is_refused_at_parse(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(_yaml_bomb("credits", levels=9) + "projects: []\n")
    result, _ = _check_config(config)
    assert result.returncode == 2
    assert "more than 64 aliases" in result.stderr, result.stderr


def test_a_yaml_alias_bomb_in_a_web_config_header_is_refused(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    bomb = _yaml_bomb("x").replace("x: *l5", "")
    web.write_text(bomb + "http_server_config:\n  headers:\n    X-Frame-Options: *l5\n")
    started = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        webconfig.load(str(web))
    assert time.monotonic() - started < 5
    assert len(str(raised.value)) < 2048
    assert "X-Frame-Options" in str(raised.value)


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "token.fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["fifo", "device", "huge", "directory"])
def test_check_config_refuses_a_token_file_that_is_not_a_small_regular_file(
    tmp_path: Path, fifo: Path, kind: str
) -> None:
    huge = tmp_path / "huge"
    huge.write_bytes(b"a" * (MAX_TOKEN_FILE_BYTES + 1))
    token = {"fifo": fifo, "device": Path("/dev/zero"), "huge": huge, "directory": tmp_path}[kind]
    config = tmp_path / "config.yml"
    config.write_text(f"projects: [{{name: p, bearer_token_file: {token}}}]\n")
    result, took = _check_config(config)
    assert result.returncode == 2
    assert "projects[0].bearer_token_file" in result.stderr
    assert "Traceback" not in result.stderr
    assert took < 10


def test_a_token_file_that_becomes_a_fifo_fails_polls_at_once_and_reloads_stay_quick(
    tmp_path: Path, fifo: Path
) -> None:
    simulator = Simulator([sim_project("1001", _token(90), credits=None)])
    simulator.start()
    try:
        config = _config(tmp_path, simulator, {"1001": "p0"}, f"poll_interval: 500ms\n{QUIET}")
        exporter = Exporter("--config.file", str(config))
        try:
            exporter.wait_ready()
            token_file = tmp_path / "token-p0"
            token = token_file.read_text()
            token_file.unlink()
            os.rename(fifo, token_file)
            eventually(
                exporter,
                lambda m: m.get("xapi_exporter_poll_error", project="p0", reason="token") == 1,
                "token error",
                timeout=10,
            )
            # A reload reads the token file too: it must fail at once, and the next one as well.
            for _ in range(3):
                started = time.monotonic()
                answer = httpx.post(f"{exporter.url}/-/reload", timeout=10)
                assert answer.status_code == 500
                assert "not a regular file" in answer.text
                assert time.monotonic() - started < 2
            token_file.unlink()
            token_file.write_text(token)
            answer = httpx.post(f"{exporter.url}/-/reload", timeout=10)
            assert answer.status_code == 200
            eventually(
                exporter,
                lambda m: m.get("xapi_exporter_poll_success", project="p0") == 1,
                "polling resumed",
                timeout=10,
            )
        finally:
            assert exporter.stop() == 0
    finally:
        simulator.stop()


def test_a_token_file_is_read_only_when_regular_and_small(tmp_path: Path, fifo: Path) -> None:
    huge = tmp_path / "huge"
    huge.write_bytes(b"a" * (100 * MIB))
    for path, reason in ((fifo, "not a regular file"), (huge, "larger than")):
        started = time.monotonic()
        with pytest.raises(TokenError, match=reason):
            read_token(TokenSource(file=path))
        assert time.monotonic() - started < 1


# -- rate-limit headers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"x-rate-limit-reset": "99999999999999999999"}, RATE_LIMIT_WINDOW),
        ({"x-rate-limit-reset": str(int(time.time()) + 10 * 365 * 86400)}, RATE_LIMIT_WINDOW),
        ({"x-rate-limit-reset": "-5"}, RATE_LIMIT_WINDOW),
        # A reset that has just passed (the header carries whole seconds): no further wait.
        # ("now-N": N seconds before the test runs, not before it was collected.)
        ({"x-rate-limit-reset": "now-1"}, 0),
        ({"x-rate-limit-reset": "now-600"}, 0),
        ({"x-rate-limit-reset": "now-1200"}, RATE_LIMIT_WINDOW),
        ({"retry-after": "120"}, 120),
        ({"retry-after": "999999999999999999999"}, RATE_LIMIT_WINDOW),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, RATE_LIMIT_WINDOW),
        ({}, RATE_LIMIT_WINDOW),
    ],
)
def test_a_rate_limit_wait_is_read_from_either_header_and_never_exceeds_the_window(
    headers: dict[str, str], wait: float
) -> None:
    now = time.time()
    sent = {
        name: str(int(now) - int(value.removeprefix("now-"))) if value.startswith("now-") else value
        for name, value in headers.items()
    }
    retry_at = RateLimit.from_headers(httpx.Headers(sent)).retry_at(now)
    assert retry_at - now == pytest.approx(wait, abs=2)


def test_a_reset_beyond_any_date_is_a_bounded_wait_not_a_parse_error_at_every_poll(
    tmp_path: Path,
) -> None:
    class FarReset(Simulator):
        def handle(
            self, raw_path: str, authorization: str | None
        ) -> tuple[int, dict[str, str], bytes]:
            status, headers, body = super().handle(raw_path, authorization)
            if status == 429:
                headers["x-rate-limit-reset"] = "99999999999999999999"
            return status, headers, body

    project = sim_project("1001", _token(91), credits=None)
    simulator = FarReset([project])
    simulator.start()
    try:
        harness = Harness(simulator, FakeClock(), tmp_path).start()
        simulator.set_fault(Fault.RATE_LIMIT, project_id="1001", count=1)
        harness.poll()
        harness.poll()  # held back, and said so
        status = harness.store.states["p0"].status
        assert status.error_reason == "rate_limited", status.error_message
        assert simulator.request_count(USAGE_PATH) == 1
        # "rate limited: no request before 2026-...": within one window from now
        until = datetime.fromisoformat((status.error_message or "").rsplit(" ", 1)[-1])
        assert until.timestamp() <= time.time() + RATE_LIMIT_WINDOW
        harness.poller.stop()
    finally:
        simulator.stop()


def test_a_credits_rate_limit_holds_back_the_next_credits_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller_module, "CREDITS_MIN_INTERVAL", timedelta(0))  # ask every poll

    class CreditsLimited(Simulator):
        def handle(
            self, raw_path: str, authorization: str | None
        ) -> tuple[int, dict[str, str], bytes]:
            if urlsplit(raw_path).path == "/2/usage/credits":
                self.set_fault(Fault.RATE_LIMIT, count=1, reset_after=600)
            return super().handle(raw_path, authorization)

    simulator = CreditsLimited([sim_project("1001", _token(92))])
    simulator.start()
    try:
        harness = Harness(simulator, FakeClock(), tmp_path).start()
        harness.poll()
        assert simulator.request_count("/2/usage/credits") == 1
        harness.poll()
        assert simulator.request_count("/2/usage/credits") == 1
        assert harness.store.states["p0"].status.success
        harness.poller.stop()
    finally:
        simulator.stop()


# -- clients on the exporter's port --------------------------------------------------------------

SLOW_CLIENTS = 600


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


@contextmanager
def _one_project_exporter(tmp_path: Path) -> Iterator[Exporter]:
    simulator = Simulator([sim_project("1001", _token(93), credits=None)])
    simulator.start()
    try:
        config = _config(tmp_path, simulator, {"1001": "p0"}, QUIET)
        exporter = Exporter("--config.file", str(config))
        try:
            exporter.wait_ready()
            yield exporter
        finally:
            assert exporter.stop() == 0
    finally:
        simulator.stop()


def _slow_heads(port: int, count: int) -> list[socket.socket]:
    """Clients that send the first byte of a request head and never the rest."""
    slow = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"G")
        sock.setblocking(False)
        slow.append(sock)
    return slow


def _dropped(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_clients_that_trickle_their_request_head_are_dropped_and_scrapes_stay_quick(
    tmp_path: Path,
) -> None:
    with _one_project_exporter(tmp_path) as exporter:
        baseline = _threads(exporter.proc.pid)
        slow = _slow_heads(exporter.port, SLOW_CLIENTS)
        seconds: list[float] = []
        threads = 0
        cut_after: dict[socket.socket, float] = {}
        started = time.monotonic()
        # Each is dropped HEADER_TIMEOUT after the exporter accepted it, or sooner when newer
        # ones crowd it out; accepting 600 takes a while on a loaded machine.
        while len(cut_after) < SLOW_CLIENTS and time.monotonic() < started + 3 * HEADER_TIMEOUT:
            for sock in slow:  # a byte a second each, never the end of the head
                if sock in cut_after:
                    continue
                try:
                    sock.send(b"E")
                    if sock.recv(1) == b"":
                        cut_after[sock] = time.monotonic() - started
                except BlockingIOError:
                    pass
                except OSError:
                    cut_after[sock] = time.monotonic() - started
            for _ in range(10):
                began = time.monotonic()
                assert httpx.get(f"{exporter.url}/metrics", timeout=5).status_code == 200
                seconds.append(time.monotonic() - began)
                threads = max(threads, _threads(exporter.proc.pid))
                time.sleep(0.1)
        peak = peak_rss(exporter.proc.pid)
        for sock in slow:
            sock.close()
        assert httpx.get(f"{exporter.url}/-/healthy", timeout=5).status_code == 200
    assert len(cut_after) == SLOW_CLIENTS  # every one dropped
    assert threads < baseline + MAX_CONNECTIONS + 8
    assert peak < RSS_CEILING
    assert statistics.quantiles(seconds, n=100)[98] < SCRAPE_P99_CEILING


def test_slow_heads_beyond_the_handler_bound_wait_unharmed_while_a_scrape_is_answered(
    tmp_path: Path,
) -> None:
    # More than MAX_CONNECTIONS: when each head had a thread, the oldest were dropped for newer
    # ones and a scrape queued behind them. Heads still pending cost no handler.
    count = MAX_CONNECTIONS + 64
    assert pending_bound() > count
    with _one_project_exporter(tmp_path) as exporter:
        baseline = _threads(exporter.proc.pid)
        slow = _slow_heads(exporter.port, count)
        response = httpx.get(f"{exporter.url}/metrics", timeout=HEADER_TIMEOUT)
        # Ordering, not a stopwatch: every slow client still waits, so the scrape was answered
        # before the first of them reached its head deadline.
        still_open = sum(not _dropped(sock) for sock in slow)
        threads = _threads(exporter.proc.pid)
        for sock in slow:
            sock.close()
    assert response.status_code == 200
    assert "xapi_exporter_" in response.text
    assert still_open == count
    assert threads < baseline + 8  # pending heads hold no thread


def test_beyond_the_pending_head_bound_the_oldest_heads_are_dropped(tmp_path: Path) -> None:
    bound, extra = pending_bound(), 32
    with _one_project_exporter(tmp_path) as exporter:
        slow = _slow_heads(exporter.port, bound + extra)
        dropped: set[int] = set()
        until = time.monotonic() + 2
        while len(dropped) < extra and time.monotonic() < until:
            dropped |= {index for index, sock in enumerate(slow) if _dropped(sock)}
            time.sleep(0.05)
        response = httpx.get(f"{exporter.url}/-/healthy", timeout=HEADER_TIMEOUT)
        for sock in slow:
            sock.close()
    assert dropped == set(range(extra))  # the oldest, and only as many as over the bound
    assert response.status_code == 200


def test_a_request_timeout_longer_than_the_poll_interval_is_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "poll_interval: 30s\nrequest_timeout: 1m\nprojects: [{name: p, bearer_token_env: HOME}]\n"
    )
    result, _ = _check_config(config)
    assert result.returncode == 0, result.stderr
    assert "warning: request_timeout: 1m is not well below poll_interval (30s)" in result.stderr


def test_a_gzipped_answer_within_the_bound_is_read_as_usual(tmp_path: Path) -> None:
    class Gzipping(Simulator):
        def handle(
            self, raw_path: str, authorization: str | None
        ) -> tuple[int, dict[str, str], bytes]:
            status, headers, body = super().handle(raw_path, authorization)
            return status, {**headers, "content-encoding": "gzip"}, gzip.compress(body)

    project = sim_project("1001", _token(94), credits=None)
    clock = FakeClock()
    simulator = Gzipping([project], clock=clock)
    simulator.start()
    try:
        harness = Harness(simulator, clock, tmp_path).start()
        harness.poll()
        labels = {"project": "p0", "project_id": "1001"}
        assert harness.value("xapi_exporter_poll_success", project="p0") == 1
        consumed = project.consumed(harness.clock.now)
        assert harness.value("xapi_project_posts_consumed", **labels) == consumed
        harness.poller.stop()
    finally:
        simulator.stop()


def test_eleven_stuck_polls_leave_a_twelfth_project_its_connection(tmp_path: Path) -> None:
    projects = [sim_project(f"{i}00{i}", _token(70 + i), credits=None) for i in range(1, 13)]
    clock = FakeClock()
    simulator = Simulator(projects, clock=clock)
    simulator.start()
    try:
        for project in projects[:-1]:
            simulator.set_fault(Fault.TRICKLE, project_id=project.project_id, delay=0.5)
        harness = Harness(simulator, clock, tmp_path)
        harness.start(harness.config(request_timeout="6s"))
        harness.poller.start()  # every project polls at once, on its own thread
        deadline = time.monotonic() + 3  # well before the stuck ones time out and free theirs
        while harness.value("xapi_exporter_poll_success", project="p11") is None:
            assert time.monotonic() < deadline, "the healthy project waited for a connection"
            time.sleep(0.05)
        assert harness.value("xapi_exporter_poll_success", project="p11") == 1
        harness.poller.stop()
    finally:
        simulator.stop()


def test_configs_beyond_the_bounds_fail_their_reload_quickly_and_the_exporter_keeps_serving(
    tmp_path: Path,
) -> None:
    """The bounds of 2026-11-30 (docs/security.md): each config sends more than one of them.
    A 400-digit budget was a traceback, `10000y` a crash loop, 25,000 projects a minute's start
    and a 13 s scrape, a 900,000-character name a 66 MB /metrics."""
    simulator = Simulator([sim_project("1001", _token(94), credits=None)])
    simulator.start()
    try:
        good = _config(tmp_path, simulator, {"1001": "p0"}, f"poll_interval: 1s\n{QUIET}")
        text = good.read_text()
        head = text.partition("projects:\n")[0]
        beyond = {
            "projects: 1001 projects: at most 1000": head
            + "projects:\n"
            + "".join(f"  - {{name: x{k}, bearer_token_file: nope}}\n" for k in range(1001)),
            "budget_usd: must be at most": text.replace(
                "bearer_token_file:", "budget_usd: " + "9" * 400 + ", bearer_token_file:"
            ),
            "poll_interval: must be at most 24h": text.replace(
                "poll_interval: 1s", "poll_interval: 10000y"
            ),
            "name: must be at most 128 printable": text.replace(
                "name: p0", "name: " + "n" * 900_000
            ),
        }
        exporter = Exporter("--config.file", str(good))
        try:
            exporter.wait_ready()
            for fragment, config_text in beyond.items():
                good.write_text(config_text)
                started = time.monotonic()
                answer = httpx.post(f"{exporter.url}/-/reload", timeout=30)
                took = time.monotonic() - started
                assert answer.status_code == 500 and fragment in answer.text, answer.text[:300]
                assert len(answer.text) < 4096
                assert took < 5, f"{fragment}: {took:.1f}s"
                scrape = httpx.get(f"{exporter.url}/metrics", timeout=10)
                assert scrape.status_code == 200
                assert "xapi_exporter_config_last_reload_successful 0.0" in scrape.text
                assert 'xapi_exporter_poll_success{project="p0"} 1.0' in scrape.text
            assert peak_rss(exporter.proc.pid) < RSS_CEILING
            good.write_text(text)
            assert httpx.post(f"{exporter.url}/-/reload", timeout=10).status_code == 200
        finally:
            assert exporter.stop() == 0
    finally:
        simulator.stop()
