"""The real process: flags, exit codes, signals, reload, and no token in any log line."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from exporter import logs
from exporter.alert_eval import free_port
from exporter.client import read_token
from exporter.config import TokenSource
from exporter.errors import TokenError
from exporter.simulator import Fault, Simulator
from tests.conftest import record_log, register_test_token
from tests.harness import sim_project
from tests.servers import Exporter

TOKEN = register_test_token(  # shaped like a real app-only bearer token, made up
    "AAAAAAAAAAAAAAAAAAAAAMLheAAAAAAA0%2BuSeid%2BULvsea4JtiGRiSDSJSI%3D"
    "EUifiRBkKG5E2XzMDjRfl76ZC9Ub0wnz4XsNiRVBChTYbJcE3F"
)
CMD = [sys.executable, "-m", "exporter"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*CMD, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )
    record_log("cli-run", result.stdout + result.stderr)
    return result


def _one_clear_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("abc\n")
    config = tmp_path / "config.yml"
    config.write_text("projects: [{name: production, bearer_token_file: token}]\n")
    result = _run("check-config", "--config.file", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{config}: ok, 1 project(s): production\n"


def test_check_config_names_each_bad_key_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("poll_interval: -5m\nprojects: [{name: p, bearer_token_file: nope}]\n")
    result = _run("check-config", "--config.file", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"x-usage-exporter: config error: {config}: poll_interval: must be greater than 0",
        f"x-usage-exporter: config error: {config}: projects[0].bearer_token_file: no such file: "
        f"{tmp_path / 'nope'}",
    ]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--log.level", "loud"], "argument --log.level: invalid choice: 'loud'"),
        (["--web.listen-address", "nowhere"], "--web.listen-address: 'nowhere' is not HOST:PORT"),
        (["--web.telemetry-path", "metrics"], "--web.telemetry-path: must start with /"),
        (["--demo", "--config.file", "x.yml"], "--demo and --config.file exclude each other"),
        (["--config.file", "/nonexistent.yml"], "/nonexistent.yml: no such file"),
        (["--web.config.file", "/nonexistent-web.yml"], "/nonexistent-web.yml: no such file"),
        ([], "no config file given and X_BEARER_TOKEN is not set"),
    ],
)
def test_bad_flags_get_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "X_BEARER_TOKEN"}
    result = subprocess.run(
        [*CMD, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )
    record_log("cli-bad-flags", result.stderr)
    assert fragment in _one_clear_line(result)


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    sim = Simulator([sim_project("1001", TOKEN), sim_project("2002", "other-" + TOKEN[:20])])
    sim.start()
    yield sim
    sim.stop()


def _config(tmp: Path, sim: Simulator, projects: str = "p0") -> Path:
    (tmp / "token0").write_text(TOKEN + "\n")
    (tmp / "token1").write_text("other-" + TOKEN[:20] + "\n")
    entries = {
        "p0": "{name: p0, bearer_token_file: token0}",
        "p1": "{name: p1, bearer_token_file: token1}",
    }
    chosen = ", ".join(entries[name] for name in projects.split(","))
    path = tmp / "config.yml"
    path.write_text(
        f"api_base_url: {sim.url}\npoll_interval: 1s\nrequest_timeout: 2s\nprojects: [{chosen}]\n"
    )
    return path


def test_sighup_with_a_broken_config_keeps_the_old_one_then_applies_a_fixed_one(
    tmp_path: Path, simulator: Simulator
) -> None:
    config = _config(tmp_path, simulator)
    exporter = Exporter("--config.file", str(config))
    try:
        exporter.wait_ready()
        config.write_text("projects: [{name: p0, bearer_token: inline}]\n")
        exporter.proc.send_signal(signal.SIGHUP)
        _eventually(lambda: "xapi_exporter_config_last_reload_successful 0.0" in exporter.metrics())
        assert 'xapi_project_info{project="p0"' in exporter.metrics()
        assert 'msg="reload failed" kept="running config"' in exporter.log.read_text()

        _config(tmp_path, simulator, "p0,p1")
        assert httpx.post(f"{exporter.url}/-/reload").status_code == 200
        _eventually(lambda: 'xapi_project_info{project="p1"' in exporter.metrics())
        assert "xapi_exporter_config_last_reload_successful 1.0" in exporter.metrics()
    finally:
        assert exporter.stop() == 0


def test_sigterm_in_the_middle_of_a_slow_poll_exits_cleanly(
    tmp_path: Path, simulator: Simulator
) -> None:
    config = _config(tmp_path, simulator)
    exporter = Exporter("--config.file", str(config))
    exporter.wait_ready()
    simulator.set_fault(Fault.SLOW, delay=1.5)
    time.sleep(1.2)  # the next poll is now waiting on the slow answer
    started = time.monotonic()
    assert exporter.stop() == 0
    assert time.monotonic() - started < 10
    assert "shutting down" in exporter.log.read_text()


def test_no_fragment_of_the_token_appears_in_debug_logs_metrics_or_page(
    tmp_path: Path, simulator: Simulator
) -> None:
    config = _config(tmp_path, simulator)
    exporter = Exporter("--config.file", str(config), "--log.level", "debug")
    try:
        exporter.wait_ready()
        for fault in (Fault.UNAUTHORIZED, Fault.SERVER_ERROR, Fault.MALFORMED, Fault.RATE_LIMIT):
            simulator.set_fault(fault, count=1)
            time.sleep(1.1)
        seen = [exporter.metrics(), httpx.get(f"{exporter.url}/").text]
    finally:
        exporter.stop()
    seen.append(exporter.log.read_text())
    assert "level=debug" in seen[-1]
    assert_no_token_fragment(seen, TOKEN)


def assert_no_token_fragment(texts: list[str], token: str, width: int = 8) -> None:
    fragments = {token[i : i + width] for i in range(len(token) - width + 1)}
    # The token's repeated "AAAA…" prefix is too common to prove anything: skip fragments that
    # are a single repeated character.
    fragments = {f for f in fragments if len(set(f)) > 2}
    for text in texts:
        leaked = sorted(f for f in fragments if f in text)
        assert not leaked, leaked[:3]


def test_the_demo_serves_a_project_within_seconds(tmp_path: Path) -> None:
    exporter = Exporter("--demo", "--log.format", "json")
    try:
        started = time.monotonic()
        exporter.wait_ready()
        text = exporter.metrics()
        assert time.monotonic() - started < 15
        assert 'xapi_project_posts_consumed{project="production"' in text
        assert 'xapi_app_posts_consumed{app_id="28871234",project="production"' in text
        assert "demo-token" not in text
        # The demo has no config file: a reload says it did nothing, by HTTP and by SIGHUP.
        answer = httpx.post(f"{exporter.url}/-/reload")
        assert (answer.status_code, answer.text) == (
            409,
            "nothing reloaded: --demo has no config file to re-read\n",
        )
        exporter.proc.send_signal(signal.SIGHUP)
        _eventually(lambda: exporter.log.read_text().count('"msg": "reload skipped"') == 2)
    finally:
        assert exporter.stop() == 0
    first = json.loads(exporter.log.read_text().splitlines()[0])
    assert (first["level"], first["msg"], first["projects"], first["demo"]) == (
        "info",
        "listening",
        2,
        True,
    )
    assert (first["address"], first["poll_interval"]) == (f"127.0.0.1:{exporter.port}", "30s")


def _eventually(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


CLASS_NAMES = ("Error", "Exception", "Timeout")  # ConnectError, FileNotFoundError, ReadTimeout...


def _no_class_name(text: str) -> None:
    shown = [word for word in text.split() if any(name in word for name in CLASS_NAMES)]
    assert shown == [], text


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda path: None, "no such file"),
        (lambda path: path.mkdir(), "is a directory"),
    ],
)
def test_check_config_says_what_is_wrong_with_the_token_path(
    tmp_path: Path, make: Callable[[Path], object], said: str
) -> None:
    make(tmp_path / "token")
    config = tmp_path / "config.yml"
    config.write_text("projects: [{name: production, bearer_token_file: token}]\n")
    line = _one_clear_line(_run("check-config", "--config.file", str(config)))
    assert "projects[0].bearer_token_file" in line and said in line
    _no_class_name(line)


def test_a_token_read_at_poll_time_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(TokenError) as missing:
        read_token(TokenSource(file=tmp_path / "gone"))
    assert str(missing.value).endswith(": no such file or directory")
    (tmp_path / "dir").mkdir()
    with pytest.raises(TokenError) as directory:
        read_token(TokenSource(file=tmp_path / "dir"))
    assert str(directory.value).endswith(": is a directory")


def test_report_says_connection_refused_when_nothing_listens_at_api_base_url(
    tmp_path: Path,
) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = tmp_path / "config.yml"
    config.write_text(
        f"api_base_url: http://127.0.0.1:{free_port()}\nrequest_timeout: 1s\n"
        "projects: [{name: production, bearer_token_file: token}]\n"
    )
    result = _run("report", "--config.file", str(config))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "x-usage-exporter: error: project production: GET /2/usage/tweets: connection refused"
    ]
    _no_class_name(result.stderr)


def test_log_lines_say_what_happened_without_class_names() -> None:
    stream = io.StringIO()
    logs.setup("info", "logfmt", stream)
    try:
        open("/nonexistent/x-usage-exporter")  # noqa: SIM115
    except OSError:
        logging.getLogger("exporter.test").exception("poll crashed", extra=logs.fields(project="p"))
    line = stream.getvalue()
    assert 'msg="poll crashed" project=p err="no such file or directory"' in line
    _no_class_name(line)
