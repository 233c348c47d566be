"""`report` and `backfill` end to end; backfill through real promtool and a real Prometheus."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.simulator import Fault, Simulator
from tests.conftest import require_tool
from tests.harness import FakeClock, sim_project
from tests.servers import Prometheus


def _now() -> datetime:
    """Real time, away from midnight UTC so that the CLI and the test agree on the day."""
    now = datetime.now(UTC)
    if now.hour == 23 and now.minute == 59:
        time.sleep(61)
        now = datetime.now(UTC)
    return now.replace(microsecond=0)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Simulator, Path, datetime]]:
    now = _now()
    reset = (now - timedelta(days=5)).day
    reset = min(reset, 28)
    project = sim_project(
        "1001", "token-report-aaaaaaaaaaaaaaaa", cap_reset_day=reset, origin=now.date()
    )
    # A frozen simulator clock: the answers do not move while the test compares.
    simulator = Simulator([project], clock=FakeClock(now))
    simulator.start()
    (tmp_path / "token").write_text(project.token)
    config = tmp_path / "config.yml"
    config.write_text(
        f"api_base_url: {simulator.url}\n"
        "pricing: {post_read_usd: 0.004}\n"
        "projects: [{name: prod, bearer_token_file: token, budget_usd: 900}]\n"
    )
    try:
        yield simulator, config, now
    finally:
        simulator.stop()


def _cycle_start(now: datetime, reset: int) -> date:
    if now.day >= reset:
        return date(now.year, now.month, reset)
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return date(year, month, reset)


def test_the_json_report_holds_the_simulator_s_cycle(
    setup: tuple[Simulator, Path, datetime], capsys: pytest.CaptureFixture[str]
) -> None:
    simulator, config, now = setup
    assert main(["report", "--config.file", str(config), "--format", "json"]) == 0
    (line,) = json.loads(capsys.readouterr().out)
    sim = simulator.project("1001")
    assert line["posts"] == sim.consumed(now)
    assert line["spend_usd"] == pytest.approx(sim.consumed(now) * 0.004, abs=1e-3)
    assert line["cycle_start"] == _cycle_start(now, sim.cap_reset_day).isoformat()
    assert line["budget_usd"] == 900
    assert line["projected_posts"] >= line["posts"] and 0 < line["days_left"] <= 31
    assert sum(app["posts"] for app in line["apps"]) == line["posts"]
    assert sum(app["share"] for app in line["apps"]) == pytest.approx(1.0, abs=1e-5)
    assert line["apps"][0]["posts"] >= line["apps"][1]["posts"]


def test_the_previous_cycle_report_sums_its_days(
    setup: tuple[Simulator, Path, datetime], capsys: pytest.CaptureFixture[str]
) -> None:
    simulator, config, now = setup
    sim = simulator.project("1001")
    args = ["report", "--config.file", str(config), "--cycle", "previous", "--format", "csv"]
    assert main(args) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    end = _cycle_start(now, sim.cap_reset_day)
    start = date(end.year - (end.month == 1), (end.month - 2) % 12 + 1, end.day)
    daily = sim.daily(now, 90)
    expected = {
        app: sum(count for day, count in days.items() if start <= day < end)
        for app, days in daily.items()
    }
    project_row, *app_rows = rows
    assert (project_row["cycle_start"], project_row["cycle_end"]) == (
        start.isoformat(),
        end.isoformat(),
    )
    assert int(project_row["posts"]) == sum(expected.values())
    assert {row["app_id"]: int(row["posts"]) for row in app_rows} == expected


def test_the_table_report_reads_like_the_console(
    setup: tuple[Simulator, Path, datetime], capsys: pytest.CaptureFixture[str]
) -> None:
    simulator, config, now = setup
    assert main(["report", "--config.file", str(config)]) == 0
    out = capsys.readouterr().out
    consumed = simulator.project("1001").consumed(now)
    assert out.startswith("prod (project 1001)\n")
    assert f"Posts        {consumed:,} (" in out
    assert "budget $900.00" in out


def test_a_refused_report_is_one_line_and_a_failure(
    setup: tuple[Simulator, Path, datetime], capsys: pytest.CaptureFixture[str]
) -> None:
    simulator, config, _ = setup
    simulator.set_fault(Fault.UNAUTHORIZED)
    assert main(["report", "--config.file", str(config)]) == 1
    err = capsys.readouterr().err
    assert err == (
        "x-usage-exporter: error: project prod: GET /2/usage/tweets: 401 Unauthorized: "
        "Unauthorized\n"
    )
    assert main(["report", "--config.file", str(config), "--format", "xml"]) == 2


def test_backfill_blocks_are_answered_by_a_real_prometheus(
    setup: tuple[Simulator, Path, datetime], tmp_path: Path
) -> None:
    promtool = require_tool("promtool")
    simulator, config, now = setup
    out = tmp_path / "history.om"
    assert main(["backfill", "--config.file", str(config), "--out", str(out)]) == 0
    assert out.read_text().endswith("# EOF\n")
    data = tmp_path / "tsdb"
    created = subprocess.run(
        [
            promtool,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--max-block-duration=720h",
            str(out),
            str(data),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert created.returncode == 0, created.stdout + created.stderr

    sim = simulator.project("1001")
    yesterday = now.date() - timedelta(days=1)
    at = datetime(yesterday.year, yesterday.month, yesterday.day, 23, 59, 59, tzinfo=UTC)
    prometheus = Prometheus(tmp_path, "global: {scrape_interval: 1m}\n", storage=data)
    try:
        today = prometheus.query(
            'xapi_project_posts_consumed_today{project="prod",job="x-usage-exporter"}',
            at.timestamp(),
        )
        assert [float(s["value"][1]) for s in today] == [
            sum(sim.day_usage(app, yesterday, now) for app in sim.apps)
        ]
        apps = prometheus.query("count(xapi_app_posts_consumed_today)", at.timestamp())
        assert float(apps[0]["value"][1]) == len(sim.apps)
        start = _cycle_start(at, sim.cap_reset_day)
        cycle = prometheus.query('xapi_project_posts_consumed{project="prod"}', at.timestamp())
        daily = sim.daily(now, 90)
        expected = sum(
            count
            for days in daily.values()
            for day, count in days.items()
            if start <= day <= yesterday
        )
        assert [float(s["value"][1]) for s in cycle] == [expected]
    finally:
        prometheus.stop()


def test_backfill_refuses_a_bad_step(
    setup: tuple[Simulator, Path, datetime], tmp_path: Path
) -> None:
    _, config, _ = setup
    args = ["backfill", "--config.file", str(config), "--out", str(tmp_path / "x")]
    assert main([*args, "--step", "10s"]) == 2
    assert main([*args, "--step", "soon"]) == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("out", ["", ".", "/", "{tmp}", "{tmp}/no-such-dir/x.om"])
def test_backfill_refuses_a_bad_out_path_before_asking_the_api(
    setup: tuple[Simulator, Path, datetime],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    out: str,
) -> None:
    """`--out ''`, `.` or `/` ended in a traceback, after every project had been fetched
    (review, 2026-11-30)."""
    simulator, config, _ = setup
    sent = simulator.request_count()
    args = ["backfill", "--config.file", str(config), "--out", out.format(tmp=tmp_path)]
    assert main(args) == 2
    assert simulator.request_count() == sent
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out: not a file path" in err


def test_a_report_prints_every_project_that_answered_and_one_line_per_failure(
    setup: tuple[Simulator, Path, datetime],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    simulator, config, now = setup
    monkeypatch.setenv("NOPE", "token-report-unknown-ccccccccc")
    (tmp_path / "revoked").write_text("token-report-revoked-bbbbbbbbbb")
    config.write_text(
        config.read_text().replace(
            "projects: [{name: prod, bearer_token_file: token, budget_usd: 900}]",
            "projects: [{name: gone, bearer_token_file: revoked},"
            " {name: prod, bearer_token_file: token}, {name: also-gone, bearer_token_env: NOPE}]",
        )
    )
    assert main(["report", "--config.file", str(config), "--format", "json"]) == 1
    captured = capsys.readouterr()
    (line,) = json.loads(captured.out)
    assert line["project"] == "prod"
    assert line["posts"] == simulator.project("1001").consumed(now)
    assert captured.err.splitlines() == [
        "x-usage-exporter: error: project gone: GET /2/usage/tweets: 401 Unauthorized: "
        "Unauthorized",
        "x-usage-exporter: error: project also-gone: GET /2/usage/tweets: 401 Unauthorized: "
        "Unauthorized",
    ]


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_a_report_by_day_lists_the_cycle_s_days(
    setup: tuple[Simulator, Path, datetime], capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    simulator, config, now = setup
    sim = simulator.project("1001")
    start = _cycle_start(now, sim.cap_reset_day)
    expected = {
        day.isoformat(): count
        for day, count in (
            (day, sum(sim.day_usage(app, day, now) for app in sim.apps))
            for day in (start + timedelta(days=n) for n in range((now.date() - start).days + 1))
        )
    }
    assert main(["report", "--config.file", str(config), "--by", "day", "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        (line,) = json.loads(out)
        got = {day["date"]: day["posts"] for day in line["days"]}
        assert "apps" not in line
    elif fmt == "csv":
        _, *rows = csv.DictReader(io.StringIO(out))
        got = {row["date"]: int(row["posts"]) for row in rows}
    else:
        assert "Day (UTC)" in out
        got = {
            parts[0]: int(parts[1].replace(",", ""))
            for parts in (row.split() for row in out.splitlines())
            if parts and parts[0][:2] == "20" and len(parts[0]) == 10
        }
    assert got == expected
    assert sum(got.values()) == sim.consumed(now)


def _samples(text: str, metric: str) -> list[tuple[float, float]]:
    return [
        (float(parts[-1]), float(parts[-2]))
        for parts in (row.split() for row in text.splitlines() if row.startswith(metric + "{"))
    ]


def test_backfill_with_a_step_that_does_not_divide_a_day_ends_each_day_at_its_total(
    setup: tuple[Simulator, Path, datetime], tmp_path: Path
) -> None:
    simulator, config, now = setup
    out = tmp_path / "history.om"
    args = ["backfill", "--config.file", str(config), "--out", str(out), "--step", "7h"]
    assert main(args) == 0
    samples = _samples(out.read_text(), "xapi_project_posts_consumed_today")
    last_of_day: dict[date, float] = {}
    for at, value in samples:
        last_of_day[datetime.fromtimestamp(at, UTC).date()] = value
        assert datetime.fromtimestamp(at, UTC).hour in {6, 13, 20, 23}
    sim = simulator.project("1001")
    yesterday = now.date() - timedelta(days=1)
    for day in (yesterday, yesterday - timedelta(days=40)):
        assert last_of_day[day] == sum(sim.day_usage(app, day, now) for app in sim.apps)
    last = [at for at, _ in samples if datetime.fromtimestamp(at, UTC).date() == yesterday][-1]
    assert datetime.fromtimestamp(last, UTC).time().isoformat() == "23:59:59"


def test_backfill_writes_the_days_of_the_partial_first_cycle_and_says_what_it_leaves_out(
    setup: tuple[Simulator, Path, datetime], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, config, now = setup
    out = tmp_path / "history.om"
    assert main(["backfill", "--config.file", str(config), "--out", str(out)]) == 0
    text = out.read_text()
    first = now.date() - timedelta(days=89)
    days = {
        datetime.fromtimestamp(at, UTC).date()
        for at, _ in _samples(text, "xapi_project_posts_consumed_today")
    }
    assert min(days) == first and len(days) == 89  # every complete day of the 90 the API sent
    cycle_days = {
        datetime.fromtimestamp(at, UTC).date()
        for at, _ in _samples(text, "xapi_project_posts_consumed")
    }
    assert first not in cycle_days
    err = capsys.readouterr().err
    assert "note: project prod: the cycle totals (xapi_project_posts_consumed, " in err
    assert f"leave out {first} .. {min(cycle_days) - timedelta(days=1)}" in err
    assert "no --instance: the series carry no instance label" in err


def test_backfill_with_an_instance_labels_every_series(
    setup: tuple[Simulator, Path, datetime], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, config, _ = setup
    out = tmp_path / "history.om"
    args = ["backfill", "--config.file", str(config), "--out", str(out)]
    assert main([*args, "--instance", "exporter:9879"]) == 0
    rows = [row for row in out.read_text().splitlines() if row.startswith("xapi_")]
    assert rows and all('instance="exporter:9879"' in row for row in rows)
    assert "no --instance" not in capsys.readouterr().err
