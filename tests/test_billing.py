"""Billing math: cycle boundaries (both cap_reset_day readings), spend and reward tiers."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from exporter.billing import (
    Cycle,
    billable_projection,
    credits_depletion,
    cycle_for,
    cycle_of,
    reset_day_of_month,
    reward_ratio,
    spend_to_next_tier,
    sum_in_cycle,
)
from exporter.config import CapResetDayMeans
from exporter.parse import parse_usage
from exporter.snapshot import build_usage

DOM = CapResetDayMeans.DAY_OF_MONTH
LEFT = CapResetDayMeans.DAYS_REMAINING


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "day", "start", "end"),
    [
        # mid-month, before and after the reset day
        (_utc(2026, 11, 23, 15), 10, _utc(2026, 11, 10), _utc(2026, 12, 10)),
        (_utc(2026, 11, 5, 15), 10, _utc(2026, 10, 10), _utc(2026, 11, 10)),
        # exactly at the reset instant the new cycle has begun
        (_utc(2026, 11, 10), 10, _utc(2026, 11, 10), _utc(2026, 12, 10)),
        (_utc(2026, 11, 9, 23, 59, 59), 10, _utc(2026, 10, 10), _utc(2026, 11, 10)),
        # across the year end
        (_utc(2026, 12, 31, 12), 15, _utc(2026, 12, 15), _utc(2027, 1, 15)),
        (_utc(2027, 1, 3), 15, _utc(2026, 12, 15), _utc(2027, 1, 15)),
        # day 31 is the last day of shorter months
        (_utc(2026, 2, 27), 31, _utc(2026, 1, 31), _utc(2026, 2, 28)),
        (_utc(2026, 2, 28, 1), 31, _utc(2026, 2, 28), _utc(2026, 3, 31)),
        (_utc(2026, 4, 30, 6), 31, _utc(2026, 4, 30), _utc(2026, 5, 31)),
        # leap years: February has 29 days in 2028, 28 in 2100 (not a leap year)
        (_utc(2028, 2, 29, 12), 30, _utc(2028, 2, 29), _utc(2028, 3, 30)),
        (_utc(2028, 2, 28, 12), 30, _utc(2028, 1, 30), _utc(2028, 2, 29)),
        (_utc(2100, 2, 28, 12), 29, _utc(2100, 2, 28), _utc(2100, 3, 29)),
        # day 1: the calendar month
        (_utc(2026, 11, 1), 1, _utc(2026, 11, 1), _utc(2026, 12, 1)),
    ],
)
def test_day_of_month_cycles(now: datetime, day: int, start: datetime, end: datetime) -> None:
    assert cycle_for(now, day, DOM) == Cycle(start, end)


@pytest.mark.parametrize(
    ("now", "left", "start", "end"),
    [
        (_utc(2026, 11, 23, 15), 17, _utc(2026, 11, 10), _utc(2026, 12, 10)),
        (_utc(2026, 11, 23, 15), 1, _utc(2026, 10, 24), _utc(2026, 11, 24)),
        (_utc(2028, 2, 20), 11, _utc(2028, 2, 2), _utc(2028, 3, 2)),
        (_utc(2026, 3, 20), 11, _utc(2026, 2, 28), _utc(2026, 3, 31)),
    ],
)
def test_days_remaining_cycles(now: datetime, left: int, start: datetime, end: datetime) -> None:
    assert cycle_for(now, left, LEFT) == Cycle(start, end)


def test_both_readings_agree_when_the_published_value_fits_both() -> None:
    # On Nov 23 a reset on Dec 10 is both "day 10" and "17 days left".
    now = _utc(2026, 11, 23, 8)
    assert cycle_for(now, 10, DOM) == cycle_for(now, 17, LEFT)


def test_the_reset_day_of_month_under_either_reading() -> None:
    now = _utc(2026, 11, 23, 8)
    assert reset_day_of_month(10, DOM, now) == 10
    assert reset_day_of_month(17, LEFT, now) == 10  # Nov 23 + 17 days = Dec 10
    assert reset_day_of_month(None, DOM, now) == 1  # unknown: the calendar month
    assert reset_day_of_month(None, LEFT, now) == 1  # unknown: the calendar month too


def test_cycle_totals_count_only_the_cycle_s_days_up_to_today() -> None:
    cycle = Cycle(_utc(2026, 11, 10), _utc(2026, 12, 10))
    daily = {date(2026, 11, 9): 1000, date(2026, 11, 10): 5, date(2026, 11, 23): 7}
    daily[date(2026, 12, 10)] = 2000
    assert sum_in_cycle(daily, cycle, date(2026, 11, 23)) == 12
    assert sum_in_cycle(daily, cycle, date(2026, 11, 22)) == 5


@pytest.mark.parametrize(
    ("spend", "ratio", "to_next"),
    [
        (0.0, 0.0, 200.0),
        (199.99, 0.0, pytest.approx(0.01)),
        (200.0, 0.10, 300.0),
        (499.0, 0.10, 1.0),
        (500.0, 0.15, 500.0),
        (999.0, 0.15, 1.0),
        (1000.0, 0.20, None),
        (25_000.0, 0.20, None),
    ],
)
def test_xai_reward_tiers(spend: float, ratio: float, to_next: object) -> None:
    assert reward_ratio(spend) == ratio
    assert spend_to_next_tier(spend) == to_next


def test_credits_run_out_at_the_last_week_s_spend_rate() -> None:
    now = _utc(2026, 11, 23, 12)
    daily = {date(2026, 11, d): 10_000 for d in range(16, 23)}  # $50 a day at $0.005
    daily[date(2026, 11, 23)] = 999_999  # today is partial and not used
    depletion = credits_depletion(500.0, daily, now, 0.005)
    assert depletion == _utc(2026, 12, 3, 12)
    assert credits_depletion(500.0, {}, now, 0.005) is None
    assert credits_depletion(-20.0, daily, now, 0.005) == now


# -- fallbacks and edges (issue 10: items 5, 12, 13, 15) -----------------------------------------


@pytest.mark.parametrize("means", [DOM, LEFT])
@pytest.mark.parametrize("raw", [None, 32, 123])
def test_an_absent_or_impossible_reset_day_is_the_calendar_month_under_both_readings(
    means: CapResetDayMeans, raw: int | None
) -> None:
    now = _utc(2026, 11, 23, 8)
    assert cycle_of(now, raw, means) == Cycle(_utc(2026, 11, 1), _utc(2026, 12, 1))
    assert reset_day_of_month(raw, means, now) == 1


def test_a_usable_reset_day_is_used_as_configured() -> None:
    now = _utc(2026, 11, 23, 8)
    assert cycle_of(now, 10, DOM) == cycle_for(now, 10, DOM)
    assert cycle_of(now, 17, LEFT) == cycle_for(now, 17, LEFT)
    assert cycle_of(now, 31, DOM) == Cycle(_utc(2026, 10, 31), _utc(2026, 11, 30))


def test_reset_day_zero_is_clamped_to_day_one_and_to_one_day_left() -> None:
    now = _utc(2026, 11, 23, 8)
    assert cycle_for(now, 0, DOM) == Cycle(_utc(2026, 11, 1), _utc(2026, 12, 1))
    assert reset_day_of_month(0, DOM, now) == 1
    # days_remaining: 0 days left can only mean the reset is at the next midnight, after now.
    cycle = cycle_for(now, 0, LEFT)
    assert cycle.end == _utc(2026, 11, 24) and cycle.end > now
    assert cycle_of(now, 0, LEFT) == cycle


def test_a_clock_in_another_time_zone_gives_the_utc_cycle() -> None:
    tokyo = timezone(timedelta(hours=9))
    # 08:00 on Nov 10 in Tokyo is still Nov 9 in UTC: the cycle that ends at Nov 10 00:00 UTC.
    now = datetime(2026, 11, 10, 8, tzinfo=tokyo)
    assert cycle_for(now, 10, DOM) == Cycle(_utc(2026, 10, 10), _utc(2026, 11, 10))
    assert cycle_for(now, 1, LEFT).end == _utc(2026, 11, 10)
    daily = {date(2026, 11, 8): 2_000}  # $10 on the last complete UTC day, Nov 8
    assert credits_depletion(10.0, daily, now, 0.005) == now + timedelta(days=1)


def test_a_cycle_excludes_its_own_reset_day_and_includes_its_start() -> None:
    cycle = Cycle(_utc(2026, 11, 10), _utc(2026, 12, 10))
    assert cycle.contains(date(2026, 11, 10)) and cycle.contains(date(2026, 12, 9))
    assert not cycle.contains(date(2026, 12, 10)) and not cycle.contains(date(2026, 11, 9))
    daily = {date(2026, 11, 9): 1, date(2026, 11, 10): 10, date(2026, 12, 10): 100}
    assert sum_in_cycle(daily, cycle, date(2026, 12, 10)) == 10


def test_credits_depletion_averages_the_days_that_exist() -> None:
    now = _utc(2026, 11, 23, 12)
    daily = {date(2026, 11, 21): 2_000, date(2026, 11, 22): 2_000}  # $10 a day, two days old
    assert credits_depletion(100.0, daily, now, 0.005) == now + timedelta(days=10)
    daily[date(2026, 11, 20)] = 0  # a day the data holds with no spend does count
    assert credits_depletion(100.0, daily, now, 0.005) == now + timedelta(days=15)


def test_credits_depletion_with_no_complete_day_uses_today_s_pace_after_an_hour() -> None:
    today = {date(2026, 11, 23): 1_000}  # $5 in half a day: $10 a day
    noon = _utc(2026, 11, 23, 12)
    assert credits_depletion(100.0, today, noon, 0.005) == noon + timedelta(days=10)
    assert credits_depletion(100.0, today, _utc(2026, 11, 23), 0.005) is None  # 00:00
    assert credits_depletion(100.0, today, _utc(2026, 11, 23, 0, 59), 0.005) is None
    assert credits_depletion(100.0, today, _utc(2026, 11, 23, 1), 0.005) is not None
    assert credits_depletion(100.0, {}, noon, 0.005) is None


def test_a_credits_spend_under_a_dollar_a_day_still_runs_out() -> None:
    now = _utc(2026, 11, 23, 12)
    daily = {date(2026, 11, 22): 100}  # $0.50 a day
    assert credits_depletion(10.0, daily, now, 0.005) == now + timedelta(days=20)
    century = credits_depletion(10.0**9, daily, now, 0.005)
    assert century == now + timedelta(seconds=100 * 365 * 86400.0)


def test_consumption_exactly_at_the_cap_is_full_utilization() -> None:
    report = parse_usage(
        {"data": {"project_usage": "2000000", "project_cap": "2000000", "cap_reset_day": 10}}
    )
    usage = build_usage(report, now=_utc(2026, 11, 23, 12), means=DOM, post_read_usd=0.005)
    assert usage.utilization == 1.0
    assert usage.spend == 10_000.0


def test_credits_depletion_uses_exactly_the_last_seven_complete_days() -> None:
    now = _utc(2026, 11, 23, 12)
    # Yesterday back to 7 days ago: 1000..7000 Posts (mean 4000, $20 a day); 8 days ago and
    # today are far off and must not count.
    daily = {date(2026, 11, 23 - offset): 1_000 * offset for offset in range(1, 8)}
    daily[date(2026, 11, 15)] = 10**6
    daily[date(2026, 11, 23)] = 10**6
    assert credits_depletion(200.0, daily, now, 0.005) == now + timedelta(days=10)
    assert credits_depletion(200.0, daily, now, 0.005, days=1) == now + timedelta(days=40)


def test_no_spend_in_the_window_is_no_depletion_time() -> None:
    now = _utc(2026, 11, 23, 12)
    daily = {date(2026, 11, 22): 0, date(2026, 11, 21): 0, date(2026, 11, 23): 0}
    assert credits_depletion(200.0, daily, now, 0.005) is None
    assert credits_depletion(200.0, {date(2026, 11, 23): 0}, now, 0.005) is None


@pytest.mark.parametrize(
    ("projected", "consumed", "cap", "billable"),
    [
        (2_600_000, 1_200_000, 2_000_000, 2_000_000),  # reads stop at the cap
        (1_500_000, 1_200_000, 2_000_000, 1_500_000),  # below it: the projection
        (2_100_000, 2_050_000, 2_000_000, 2_050_000),  # already past it: what was read
        (2_600_000, 1_200_000, None, 2_600_000),  # no cap known: the projection
    ],
)
def test_projected_spend_stops_at_the_cap(
    projected: float, consumed: float, cap: int | None, billable: float
) -> None:
    """Projected spend was Posts projected past the cap x price: budget and spending-limit
    pages for money the X API cannot bill (review, 2026-11-30)."""
    assert billable_projection(projected, consumed, cap) == billable


def test_a_snapshot_projects_no_spend_past_the_cap() -> None:
    answer = {
        "data": {
            "project_cap": "1000",
            "cap_reset_day": 1,
            "project_usage": "900",
            "daily_project_usage": [
                {"date": f"2026-11-{d:02d}", "usage": "100"} for d in range(1, 10)
            ],
        }
    }
    now = datetime(2026, 11, 10, 12, tzinfo=UTC)
    usage = build_usage(
        parse_usage(answer), now=now, means=CapResetDayMeans.DAY_OF_MONTH, post_read_usd=0.005
    )
    assert usage.forecast.projected > 2_000  # 100 a day for 20 more days
    assert usage.projected_spend == pytest.approx(1_000 * 0.005)
