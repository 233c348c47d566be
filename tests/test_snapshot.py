"""Snapshot: the pure builder at the edges of a day and a cycle, and the store's bookkeeping."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pytest

from exporter.config import CapResetDayMeans, ProjectConfig, TokenSource
from exporter.forecast import KEEP_DAYS
from exporter.parse import UsageReport
from exporter.snapshot import (
    UNKNOWN_PROJECT_ID,
    ConfigStatus,
    KeptDays,
    PollStatus,
    ProjectState,
    Store,
    build_usage,
    keep_days,
)

DOM = CapResetDayMeans.DAY_OF_MONTH


def _report(**overrides: object) -> UsageReport:
    fields: dict[str, object] = {
        "project_id": "42",
        "cap": 1_000,
        "cap_reset_day": 1,
        "project_usage": None,
        "daily": {},
        "apps": {},
    }
    fields.update(overrides)
    return UsageReport(**fields)  # type: ignore[arg-type]


def _project(name: str) -> ProjectConfig:
    return ProjectConfig(name, TokenSource(env="X"), None, None)


def test_exactly_midnight_with_an_entry_for_today_and_no_complete_day() -> None:
    """The first second of a cycle: nothing has elapsed, nothing may divide by it."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    usage = build_usage(_report(daily={now.date(): 0}), now=now, means=DOM, post_read_usd=0.005)
    assert usage.consumed == 0 and usage.consumed_today == 0
    assert usage.cycle.start == now
    for value in (usage.forecast.projected, usage.forecast.lower, usage.forecast.upper):
        assert math.isfinite(value) and value >= 0
    assert usage.daily_baseline is None


def test_days_outside_the_history_window_and_the_future_are_dropped() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    daily = {date(2026, 11, 24): 5, date(2026, 8, 1): 7, date(2026, 11, 23): 3}
    usage = build_usage(_report(daily=daily), now=now, means=DOM, post_read_usd=0.005)
    assert dict(usage.daily) == {date(2026, 11, 23): 3}
    assert usage.consumed == 3  # the overview shape: the cycle's days up to today


def test_project_usage_wins_over_the_sum_of_the_days_and_ids_default_to_unknown() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    report = _report(project_id=None, project_usage=50, daily={date(2026, 11, 23): 3})
    usage = build_usage(report, now=now, means=DOM, post_read_usd=0.01)
    assert (usage.consumed, usage.project_id, usage.spend) == (50, UNKNOWN_PROJECT_ID, 0.5)
    assert usage.utilization == 0.05


def test_the_store_generation_grows_at_every_change() -> None:
    store = Store(ConfigStatus(300.0, True, 1.0))
    assert store.generation == 0 and dict(store.states) == {}
    store.put(ProjectState(_project("a")))
    store.put(ProjectState(_project("b")))
    assert store.generation == 2
    store.retain({"a"})
    assert store.generation == 3
    store.set_config_status(ConfigStatus(60.0, False, 2.0))
    assert store.generation == 4


def test_retain_keeps_exactly_the_named_projects_and_put_replaces_a_state() -> None:
    store = Store(ConfigStatus(300.0, True, 1.0))
    for name in ("a", "b", "c"):
        store.put(ProjectState(_project(name)))
    before = store.states
    store.retain({"a", "c", "not-there"})
    assert sorted(store.states) == ["a", "c"]
    assert sorted(before) == ["a", "b", "c"]  # a reader's mapping is never edited under it
    failed = ProjectState(_project("a"), status=PollStatus(success=False))
    store.put(failed)
    assert store.states["a"] is failed and sorted(store.states) == ["a", "c"]


def test_the_config_status_is_replaced_whole() -> None:
    store = Store(ConfigStatus(300.0, True, 1.0))
    status = ConfigStatus(60.0, False, 2.0)
    store.set_config_status(status)
    assert store.config_status is status


def test_a_state_mapping_cannot_be_edited_by_a_reader() -> None:
    store = Store(ConfigStatus(300.0, True, 1.0))
    store.put(ProjectState(_project("a")))
    states = store.states
    with pytest.raises(TypeError):
        states["b"] = ProjectState(_project("b"))  # type: ignore[index]
    assert sorted(store.states) == ["a"]


def test_the_history_window_keeps_exactly_a_hundred_days() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    oldest, too_old = now.date() - timedelta(days=100), now.date() - timedelta(days=101)
    usage = build_usage(
        _report(daily={oldest: 1, too_old: 2}), now=now, means=DOM, post_read_usd=0.005
    )
    assert dict(usage.daily) == {oldest: 1}


def test_a_day_the_answer_has_not_reached_yet_counts_nothing_today() -> None:
    """Days are listed up to the last one with usage: no entry for today is no Post today."""
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    yesterday = now.date() - timedelta(days=1)
    report = _report(daily={yesterday: 5}, apps={"7": {yesterday: 5}})
    usage = build_usage(report, now=now, means=DOM, post_read_usd=0.005)
    assert usage.consumed_today == 0
    assert [(app.app_id, app.consumed, app.today) for app in usage.apps] == [("7", 5, 0)]


def test_without_any_day_today_is_known_only_for_a_cycle_without_usage() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    used = build_usage(_report(project_usage=5), now=now, means=DOM, post_read_usd=0.005)
    assert used.consumed == 5 and used.consumed_today is None
    idle = build_usage(_report(project_usage=0), now=now, means=DOM, post_read_usd=0.005)
    assert idle.consumed_today == 0
    # Days older than the 90 the API returns are not usage data: they do not make today known.
    stale = {now.date() - timedelta(days=120): 9}
    old = build_usage(_report(project_usage=5, daily=stale), now=now, means=DOM, post_read_usd=0)
    assert old.consumed_today is None


def test_kept_days_take_the_answer_over_the_old_days_and_stop_at_the_bound() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    today = now.date()
    old = {today - timedelta(days=k): 100 for k in range(1, KEEP_DAYS + 30)}
    before = KeptDays.of("42", old)
    answer = {today - timedelta(days=1): 7, today - timedelta(days=2): 8, today: 9}
    kept = keep_days(before, _report(daily=answer), now)
    assert kept.project_id == "42"
    assert kept.days[today - timedelta(days=1)] == 7  # a revised day: the answer wins
    assert today not in kept.days  # today is not complete yet
    assert min(kept.days) == today - timedelta(days=KEEP_DAYS)
    assert len(kept.days) == KEEP_DAYS
    # Nothing new: the same object, which tells the history file there is nothing to write.
    assert keep_days(kept, _report(daily=answer), now) is kept
    # Another X project behind the same name: its days are not this one's.
    other = keep_days(kept, _report(project_id="43", daily=answer), now)
    assert other.project_id == "43" and dict(other.days) == {
        today - timedelta(days=1): 7,
        today - timedelta(days=2): 8,
    }


def test_the_forecast_reads_the_kept_days_of_the_same_project_only() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    today = now.date()
    answer = {today - timedelta(days=k): 1_000 for k in range(0, 90)}
    # A year ago the days ahead were three times as busy as the weeks before them.
    old = {today - timedelta(days=k): 1_000 * (3 if k <= 364 else 1) for k in range(90, KEEP_DAYS)}
    report = _report(daily=answer)
    plain = build_usage(report, now=now, means=DOM, post_read_usd=0.005)
    for project_id, changed in (("42", True), ("43", False)):
        kept = KeptDays.of(project_id, old | answer)
        usage = build_usage(report, now=now, means=DOM, post_read_usd=0.005, kept=kept)
        assert (usage.forecast != plain.forecast) is changed
        assert usage.daily == plain.daily  # the answer's days, as before: the page and sums
