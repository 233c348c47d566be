"""Collector: a fixed upstream answer renders to exactly the golden exposition, lint-clean."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from exporter.collector import UsageCollector
from exporter.config import CapResetDayMeans, ProjectConfig, TokenSource
from exporter.parse import Credits, parse_usage
from exporter.snapshot import (
    ConfigStatus,
    CreditsSnapshot,
    HistoryStatus,
    PollStatus,
    ProjectState,
    Store,
    build_usage,
    keep_days,
)
from tests.conftest import require_tool

HERE = Path(__file__).parent / "golden"
_HOUR = timedelta(hours=1)
TAKEN = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


def _store() -> Store:
    report = parse_usage(json.loads((HERE / "usage-answer.json").read_text()))
    usage = build_usage(report, now=TAKEN, means=CapResetDayMeans.DAY_OF_MONTH, post_read_usd=0.005)
    store = Store(ConfigStatus(300.0, True, 1_795_000_000.0))
    project = ProjectConfig("production", TokenSource(env="X"), 1_500.0, None)
    store.put(
        ProjectState(
            project=project,
            usage=usage,
            credits=CreditsSnapshot(
                True, Credits(420.0, 400.0, 20.0), TAKEN + timedelta(days=9), TAKEN - _HOUR
            ),
            status=PollStatus(
                success=True,
                last_attempt=TAKEN,
                last_success=TAKEN,
                duration=0.25,
                rate_limit_remaining=41,
                rate_limit_reset=1_795_449_600.0,
            ),
            requests={("usage", "200"): 9, ("usage", "503"): 2, ("credits", "200"): 3},
            errors={("usage", "server_error"): 2},
            configured_at=TAKEN - timedelta(days=3),
            kept=keep_days(None, report, TAKEN),
        )
    )
    return store


def _render(store: Store, now: datetime) -> str:
    registry = CollectorRegistry()
    registry.register(UsageCollector(store, clock=lambda: now))
    return generate_latest(registry).decode()


def test_a_fixed_answer_renders_the_golden_exposition() -> None:
    text = _render(_store(), TAKEN + timedelta(minutes=2))
    golden = HERE / "metrics.prom"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_the_golden_figures_are_the_answer_s_figures() -> None:
    """Independent of the golden file: the key numbers, read back from the exposition."""
    registry = CollectorRegistry()
    registry.register(UsageCollector(_store(), clock=lambda: TAKEN))
    p = {"project": "production", "project_id": "1460987654321098752"}
    assert registry.get_sample_value("xapi_project_posts_consumed", p) == 219_800
    assert registry.get_sample_value("xapi_project_posts_consumed_today", p) == 27_600
    assert registry.get_sample_value("xapi_project_spend_usd", p) == 1099.0
    assert registry.get_sample_value("xapi_project_xai_reward_ratio", p) == 0.20
    assert registry.get_sample_value("xapi_project_budget_usd", p) == 1500.0
    assert registry.get_sample_value("xapi_project_spending_limit_usd", p) is None
    # Nov 19 is the reset day: the cycle holds Nov 19..23 of the daily data.
    start = datetime(2026, 11, 19, tzinfo=UTC).timestamp()
    assert registry.get_sample_value("xapi_project_cycle_start_timestamp_seconds", p) == start
    app = {**p, "app_id": "29501234"}
    assert (
        registry.get_sample_value("xapi_app_posts_consumed", app)
        == 44800 + 40200 + 31000 + 29900 + 27150
    )
    baseline = registry.get_sample_value("xapi_project_posts_consumed_daily_baseline", p)
    assert baseline == 42_000  # median of Nov 16..22


def test_help_texts_say_the_values_are_cached_and_no_sample_has_a_timestamp() -> None:
    store = _store()
    store.set_history_status(HistoryStatus(loaded_ok=True, write_ok=True, last_write=1.0))
    text = _render(store, TAKEN)
    helps = [line for line in text.splitlines() if line.startswith("# HELP")]
    # The exporter's own facts are current at every scrape: saying "cached" would be untrue.
    current = {
        "xapi_exporter_build_info",
        "xapi_exporter_poll_interval_seconds",
        "xapi_exporter_config_last_reload_successful",
        "xapi_exporter_config_last_reload_success_timestamp_seconds",
        "xapi_exporter_project_configured_timestamp_seconds",
        "xapi_exporter_history_file_load_success",
        "xapi_exporter_history_file_write_success",
        "xapi_exporter_history_file_last_write_timestamp_seconds",
    }
    assert all(f"# HELP {name} " in text for name in current)
    for line in helps:
        name = line.split()[2]
        cached = "Cached: refreshed every poll_interval" in line
        assert cached is (name not in current), line
        assert cached or line.endswith("Current at scrape time."), line
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    # name{labels} value, with nothing after the value
    values = [
        line.rsplit("} ", 1)[-1] if "}" in line else line.split(" ", 1)[1] for line in samples
    ]
    assert samples and all(len(value.split()) == 1 for value in values)


def test_today_and_the_cycle_disappear_when_their_day_and_cycle_end() -> None:
    store = _store()
    tomorrow = _render(store, datetime(2026, 11, 24, 0, 1, tzinfo=UTC))
    assert "xapi_project_posts_consumed_today{" not in tomorrow
    assert "xapi_project_posts_consumed{" in tomorrow
    next_cycle = _render(store, datetime(2026, 12, 19, 0, 0, tzinfo=UTC))
    for name in (
        "xapi_project_posts_consumed{",
        "xapi_app_posts_consumed{",
        "xapi_project_spend_usd{",
    ):
        assert name not in next_cycle
    assert "xapi_project_cap_posts{" in next_cycle


def test_promtool_finds_nothing_to_say_about_the_exposition() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=_render(_store(), TAKEN),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr
    )


def _odd_store(mutate: Any) -> Store:
    payload = json.loads((HERE / "usage-answer.json").read_text())
    mutate(payload["data"])
    report = parse_usage(payload)
    usage = build_usage(report, now=TAKEN, means=CapResetDayMeans.DAY_OF_MONTH, post_read_usd=0.005)
    store = Store(ConfigStatus(300.0, True, 1_795_000_000.0))
    project = ProjectConfig("production", TokenSource(env="X"), None, None)
    store.put(ProjectState(project, usage, status=PollStatus(success=True, last_success=TAKEN)))
    return store


def test_an_impossible_cap_reset_day_is_exported_raw_beside_the_calendar_month() -> None:
    registry = CollectorRegistry()
    registry.register(
        UsageCollector(_odd_store(lambda d: d.update(cap_reset_day=123)), clock=lambda: TAKEN)
    )
    p = {"project": "production", "project_id": "1460987654321098752"}
    assert registry.get_sample_value("xapi_project_cap_reset_day", p) == 123
    assert registry.get_sample_value("xapi_project_cap_posts", p) == 3_000_000
    assert registry.get_sample_value("xapi_project_posts_consumed", p) == 219_800
    start = registry.get_sample_value("xapi_project_cycle_start_timestamp_seconds", p)
    assert start == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    invalid = {"project": "production", "field": "cap_reset_day"}
    assert registry.get_sample_value("xapi_exporter_response_invalid_field", invalid) == 1


def test_missing_sub_fields_and_errors_beside_data_are_exported() -> None:
    def mutate(data: dict[str, Any]) -> None:
        del data["daily_project_usage"]["usage"][0]["usage"]
        data["daily_project_usage"]["usage"].append({"date": "2026-11-23", "usage": "1"})

    registry = CollectorRegistry()
    registry.register(UsageCollector(_odd_store(mutate), clock=lambda: TAKEN))
    for family, field in (
        ("xapi_exporter_response_missing_field", "daily_project_usage.usage"),
        ("xapi_exporter_response_invalid_field", "daily_project_usage"),
    ):
        assert registry.get_sample_value(family, {"project": "production", "field": field}) == 1
    entries = registry.get_sample_value(
        "xapi_exporter_response_error_entries", {"project": "production"}
    )
    assert entries == 1  # the golden answer carries one "Partial Error" beside its data


def test_blocked_states_are_exported_without_any_usage_and_capped_ends_with_its_cycle() -> None:
    store = Store(ConfigStatus(300.0, True, 1_795_000_000.0))
    project = ProjectConfig("production", TokenSource(env="X"), None, None)
    end = datetime(2026, 12, 1, tzinfo=UTC)
    status = PollStatus(
        success=False,
        error_reason="usage_capped",
        usage_capped=True,
        capped_until=end,
        credits_depleted=True,
    )
    store.put(ProjectState(project, status=status))
    p = {"project": "production", "project_id": "unknown"}

    def value(name: str, now: datetime) -> float | None:
        registry = CollectorRegistry()
        registry.register(UsageCollector(store, clock=lambda: now))
        return registry.get_sample_value(name, p)

    assert value("xapi_project_usage_capped", TAKEN) == 1
    assert value("xapi_project_credits_depleted", TAKEN) == 1
    assert value("xapi_project_usage_capped", end - timedelta(seconds=1)) == 1
    assert value("xapi_project_usage_capped", end) is None
    # Credits are not a billing-cycle matter: blocked until an answer says otherwise.
    assert value("xapi_project_credits_depleted", end) == 1
