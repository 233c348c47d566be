"""`backtest`: one code path with /metrics, Prometheus' evaluation, judged cycles, bad traces."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from exporter import backtest, backtest_sources
from exporter.alert_eval import (
    AlertRule,
    RulesError,
    firings,
    free_port,
    inline_recording_rules,
    load_rules,
)
from exporter.cli import main
from exporter.client import XApiClient, fetch_usage
from exporter.simulator import Simulator
from tests.conftest import require_tool
from tests.harness import FakeClock, running, sim_project

REPO = Path(__file__).resolve().parent.parent
SHIPPED = [REPO / "alerts" / "rules.yml", REPO / "alerts" / "thresholds.yml"]


@pytest.fixture
def clean_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the backtest must create (and remove) its temporary TSDB."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def _write_trace(path: Path, start: date, posts: list[int]) -> Path:
    rows = [f"{start + timedelta(days=i)},{n}" for i, n in enumerate(posts)]
    path.write_text("date,posts\n" + "\n".join(rows) + "\n")
    return path


# --- one code path with the live exporter ------------------------------------------------------


def _project_samples(collector: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collector.collect()  # type: ignore[attr-defined]
        for sample in family.samples
        if sample.name.startswith(("xapi_project_", "xapi_app_"))
    }


def test_replay_at_a_step_serves_what_the_live_exporter_served(tmp_path: Path) -> None:
    """The answer fetched at the end, replayed at an earlier midnight and at the end itself,
    gives exactly the project series the in-process exporter served at those moments.

    Both ask for 86 days, so that the 90 days fetched at the end hold every day the exporter
    saw four days earlier.
    """
    end = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
    earlier = datetime(2026, 11, 19, tzinfo=UTC)  # a midnight: today's partial day is 0 in both
    project = sim_project(
        "7001", "token-backtest-aaaaaaaaaaaaaa", growth_per_day=0.01, cap=1_000_000
    )
    clock = FakeClock(end)
    with running([project], tmp_path, clock) as harness:
        config = harness.config(
            history_days=86,
            projects=[
                {
                    "name": "p0",
                    "bearer_token_file": str(tmp_path / "token-0"),
                    "budget_usd": 3000,
                    "spending_limit_usd": 5000,
                }
            ],
        )
        (tmp_path / "token-0").write_text(project.token)
        client = XApiClient(harness.simulator.url, timeout=5)
        try:
            answer = fetch_usage(
                client, project.token, 90, deadline=time.monotonic() + 10, attempts=[]
            )
        finally:
            client.close()
        history = backtest.History(config.projects[0], answer, observed_until=end, history_days=86)
        for at in (earlier, end):
            clock.now = at
            # The replay holds the days an exporter polling since the history began would have
            # kept (backtest.kept_at); this one starts with them, as from --history.file.
            harness.start(config, kept={"p0": backtest.kept_at(history, at)})
            harness.poll()
            live = _project_samples(harness.registry)
            replayed, _ = backtest.exposition_at(history, at)
            assert live and _project_samples(replayed) == live, at
            assert any(k[0] == "xapi_project_cap_exhaustion_timestamp_seconds" for k in live)


# --- the for: state machine against promtool ---------------------------------------------------


def test_for_and_keep_firing_for_agree_with_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rng = random.Random(14)
    minutes = 90
    signals = {
        "a": [1 if rng.random() < 0.7 else 0 for _ in range(minutes)],
        "b": [1 if (m // 7) % 3 else 0 for m in range(minutes)],
    }
    rules = [
        AlertRule("BtHold", "bt_signal > 0", 180.0, 0.0, {"severity": "warning"}),
        AlertRule("BtKeep", "bt_signal > 0", 120.0, 180.0, {"severity": "critical"}),
        AlertRule("BtNow", "bt_signal > 0", 0.0, 0.0, {"severity": "info"}),
    ]
    rule_file = tmp_path / "rules.yml"
    rule_file.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "bt",
                        "rules": [
                            {
                                "alert": r.name,
                                "expr": r.expr,
                                "for": f"{int(r.hold)}s",
                                "keep_firing_for": f"{int(r.keep_firing)}s",
                                "labels": dict(r.labels),
                            }
                            for r in rules
                        ],
                    }
                ]
            }
        )
    )
    grid = [m * 60.0 for m in range(minutes)]
    present: dict[tuple[tuple[str, str], ...], set[float]] = {
        (("__name__", "bt_signal"), ("which", name)): {m * 60.0 for m, v in enumerate(values) if v}
        for name, values in signals.items()
    }
    found = [f for rule in rules for f in firings(rule, grid, present)]
    assert any(f.alert == "BtKeep" and f.end is not None for f in found)
    checks = []
    for m in range(minutes):
        at = m * 60.0
        for rule in rules:
            firing = [
                {"exp_labels": dict(f.labels) | {}}
                for f in found
                if f.alert == rule.name and f.start <= at and (f.end is None or at < f.end)
            ]
            for item in firing:
                item["exp_labels"].pop("alertname")
            checks.append({"eval_time": f"{m}m", "alertname": rule.name, "exp_alerts": firing})
    test_file = tmp_path / "test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(rule_file)],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [
                            {
                                "series": f'bt_signal{{which="{name}"}}',
                                "values": " ".join(str(v) for v in values),
                            }
                            for name, values in signals.items()
                        ],
                        "alert_rule_test": checks,
                    }
                ],
            }
        )
    )
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- rules -------------------------------------------------------------------------------------


def test_recording_rules_are_inlined_and_a_user_override_is_used(tmp_path: Path) -> None:
    shipped = load_rules(SHIPPED)
    assert not [r.name for r in shipped if "xapi:alert_threshold" in r.expr]
    forecast = next(r for r in shipped if r.name == "XApiPostCapProjectedExhaustion")
    assert "(vector(0.25))" in forecast.expr
    thresholds = yaml.safe_load(SHIPPED[1].read_text())
    for rule in thresholds["groups"][0]["rules"]:
        if rule["record"] == "xapi:alert_threshold_forecast_min_cycle_elapsed:ratio":
            rule["expr"] = "vector(0.4)"
    own = tmp_path / "my-thresholds.yml"
    own.write_text(yaml.safe_dump(thresholds))
    overridden = load_rules([SHIPPED[0], own])
    forecast = next(r for r in overridden if r.name == "XApiPostCapProjectedExhaustion")
    assert "(vector(0.4))" in forecast.expr and "vector(0.25)" not in forecast.expr


def test_a_range_over_a_recorded_selector_is_inlined_and_over_an_expression_refused() -> None:
    """XApiExporterDown takes max_over_time over xapi:alert_exporter_target:up; the backtest
    refused any range over a recording rule (2026-11-30)."""
    recording = {"t:up": 'up{job=~".*x.*"}', "t:ratio": "a / b"}
    assert (
        inline_recording_rules("max_over_time(t:up[1h]) or t:up", recording, "alert A")
        == 'max_over_time(up{job=~".*x.*"}[1h]) or (up{job=~".*x.*"})'
    )
    with pytest.raises(RulesError, match="alert A: uses recording rule t:ratio"):
        inline_recording_rules("max_over_time(t:ratio[1h])", recording, "alert A")
    with pytest.raises(RulesError, match="alert A: uses recording rule t:up with matchers"):
        inline_recording_rules('t:up{job="y"}', recording, "alert A")


# --- judged traces, end to end with promtool and prometheus -----------------------------------


def test_a_trace_whose_cap_is_crossed_on_a_known_day_reports_that_day(
    tmp_path: Path, clean_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_tool("promtool")
    require_tool("prometheus")
    # 40 quieter days (February stays below the cap), then March at 100,000 Posts a day:
    # 1,550,000 is reached at noon of its 16th day.
    posts = [40_000] * 40 + [100_000] * 31
    trace = _write_trace(tmp_path / "steady.csv", date(2026, 1, 20), posts)
    code = main(
        [
            "backtest",
            "--trace",
            str(trace),
            "--cap",
            "1550000",
            "--reset-day",
            "1",
            "--budget-usd",
            "10000",
            "--step",
            "3h",
            "--format",
            "json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "backtest: replay" in captured.err
    document = json.loads(captured.out)
    march = next(c for c in document["cycles"] if c["start"] == "2026-03-01T00:00:00Z")
    assert march["end"] == "2026-04-01T00:00:00Z"
    assert march["cap_reached_at"] == "2026-03-16T12:00:00Z"
    # $10,000 at $0.005 a Post: 2,000,000 Posts, the end of the 20th day.
    assert march["budget_reached_at"] == "2026-03-21T00:00:00Z"
    assert march["spending_limit_reached_at"] is None
    forecast = [f for f in march["firings"] if f["alert"] == "XApiPostCapProjectedExhaustion"]
    assert forecast and forecast[0]["lead_seconds"] >= 3 * 86400
    assert forecast[0]["severity"] == "warning" and forecast[0]["labels"]["project"] == "steady"
    assert document["summary"]["cap"]["reached"] == 1
    assert document["summary"]["cap"]["paged_3d_ahead"] == 1
    assert list(clean_tmp.iterdir()) == []


def test_backtest_demo_shows_a_paged_cap_crossing_with_its_lead(
    clean_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_tool("promtool")
    require_tool("prometheus")
    assert main(["backtest", "--demo", "--step", "6h"]) == 0
    table = capsys.readouterr().out
    crossing = [line for line in table.splitlines() if "before cap" in line]
    assert any("XApiPostCapProjectedExhaustion" in line for line in crossing), table
    assert "cap             reached" in table
    assert list(clean_tmp.iterdir()) == []


def test_backtest_config_file_uses_the_projects_history_and_budgets(
    tmp_path: Path, clean_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_tool("promtool")
    require_tool("prometheus")
    project = sim_project("7002", "token-backtest-bbbbbbbbbbbbbb", cap_reset_day=5)
    simulator = Simulator([project], clock=FakeClock(datetime.now(UTC)))
    simulator.start()
    try:
        (tmp_path / "token").write_text(project.token)
        config = tmp_path / "config.yml"
        config.write_text(
            f"api_base_url: {simulator.url}\n"
            "projects: [{name: prod, bearer_token_file: token, budget_usd: 2500}]\n"
        )
        code = main(["backtest", "--config.file", str(config), "--step", "1d", "--format", "json"])
    finally:
        simulator.stop()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    cycles = json.loads(captured.out)["cycles"]
    # 90 days of history hold two whole cycles and the running one, each from the 5th.
    assert [c["start"][8:10] for c in cycles] == ["05", "05", "05"]
    assert [c["complete"] for c in cycles] == [True, True, False]
    assert {(c["project"], c["budget_usd"], c["cap"]) for c in cycles} == {
        ("prod", 2500.0, project.cap)
    }
    assert list(clean_tmp.iterdir()) == []


# --- refusals and failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("date,posts\n2026-01-01,10\n2026-01-32,5\n", 3, "is not YYYY-MM-DD"),
        ("date,posts\n2026-01-01,10\n2026-01-02,-5\n", 3, "not a whole number"),
        ("2026-01-01,10\n2026-01-02,ten\n", 2, "not a whole number"),
        ("date,posts\n2026-01-01,10\n2026-01-01,11\n", 3, "second row for 2026-01-01"),
        ("date,posts\n2026-01-01\n", 2, "expected date,posts[,app_id]"),
        ("date,clicks\n2026-01-01,1\n", 1, "header must be"),
        ("date,posts,app_id\n2026-01-01,1,a\n2026-01-01,2,a\n", 3, "second row for 2026-01-01"),
    ],
)
def test_a_malformed_trace_is_refused_with_its_line_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, line: int, message: str
) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text(content)
    assert main(["backtest", "--trace", str(trace), "--cap", "100"]) == 2
    err = capsys.readouterr().err
    assert f"{trace}:{line}: " in err and message in err, err
    assert "Traceback" not in err


def test_a_trace_longer_than_its_bound_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = _write_trace(tmp_path / "long.csv", date(2020, 1, 1), [1] * 800)
    assert main(["backtest", "--trace", str(trace)]) == 2
    assert f"{trace}:733: more than 731 days" in capsys.readouterr().err


def test_a_trace_with_apps_sums_them_per_day(tmp_path: Path) -> None:
    trace = tmp_path / "apps.csv"
    trace.write_text("# by App\n2026-01-01,10,a\n2026-01-01,5,b\n2026-01-02,7,a\n")
    daily, apps = backtest_sources.read_trace(trace)
    assert daily == {date(2026, 1, 1): 15, date(2026, 1, 2): 7}
    assert apps == {"a": {date(2026, 1, 1): 10, date(2026, 1, 2): 7}, "b": {date(2026, 1, 1): 5}}


@pytest.mark.parametrize(
    "flags",
    [
        ["--step", "10s"],
        ["--step", "soon"],
        ["--cap", "0"],
        ["--reset-day", "32"],
        ["--budget-usd", "nan"],
    ],
)
def test_bad_flags_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    trace = _write_trace(tmp_path / "t.csv", date(2026, 1, 1), [1, 2, 3])
    assert main(["backtest", "--trace", str(trace), *flags]) == 2
    assert "error: --" in capsys.readouterr().err


def test_trace_flags_without_a_trace_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", "--demo", "--cap", "10"]) == 2
    assert "go with --trace" in capsys.readouterr().err


def test_an_unreachable_prometheus_url_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = _write_trace(tmp_path / "t.csv", date(2026, 1, 1), [100] * 3)
    url = f"http://127.0.0.1:{free_port()}"
    code = main(["backtest", "--trace", str(trace), "--cap", "500", "--prometheus.url", url])
    assert code == 1
    assert f"prometheus at {url}" in capsys.readouterr().err


def test_prometheus_missing_from_path_exits_1_and_leaves_nothing(
    tmp_path: Path,
    clean_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    promtool = require_tool("promtool")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "promtool").symlink_to(promtool)
    monkeypatch.setenv("PATH", str(bin_dir))
    trace = _write_trace(tmp_path / "t.csv", date(2026, 1, 1), [100] * 3)
    assert main(["backtest", "--trace", str(trace), "--cap", "500", "--step", "6h"]) == 1
    assert "prometheus is not installed" in capsys.readouterr().err
    assert list(clean_tmp.iterdir()) == []


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(child) for child in text)
    return found


def test_ctrl_c_stops_prometheus_and_removes_the_tsdb(tmp_path: Path) -> None:
    """Ctrl-C while the backtest waits for its Prometheus: the child is stopped, the TSDB gone.

    The `prometheus` on PATH here never gets ready (it only sleeps), so the interrupt surely
    comes while the child runs and the TSDB that the real promtool built is on disk.
    """
    promtool = require_tool("promtool")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "promtool").symlink_to(promtool)
    never_ready = bin_dir / "prometheus"
    never_ready.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(600)\n")
    never_ready.chmod(0o755)
    trace = _write_trace(tmp_path / "t.csv", date(2026, 1, 1), [1000] * 40)
    env = dict(os.environ, TMPDIR=str(scratch), PATH=f"{bin_dir}:{os.environ['PATH']}")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "backtest",
            "--trace",
            str(trace),
            "--cap",
            "30000",
            "--step",
            "6h",
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        prometheus: int | None = None
        deadline = time.monotonic() + 60
        while prometheus is None and time.monotonic() < deadline and process.poll() is None:
            for child in _children(process.pid):
                try:
                    cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:
                    continue
                if str(never_ready).encode() in cmdline.split(b"\0"):
                    prometheus = child
            time.sleep(0.05)
        assert prometheus is not None, "prometheus never started"
        assert list(scratch.glob("x-usage-backtest-*/data/*"))  # the TSDB blocks
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert b"interrupted" in err and b"Traceback" not in err
    assert not Path(f"/proc/{prometheus}").exists()
    assert list(scratch.iterdir()) == []
