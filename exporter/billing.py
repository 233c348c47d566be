"""Pure billing math: cycle boundaries, cycle totals, spend and xAI reward tiers."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from exporter.config import CapResetDayMeans
from exporter.parse import MAX_CAP_RESET_DAY

# Without cap_reset_day (the overview-page shape) the cycle is taken to be the calendar month.
FALLBACK_CAP_RESET_DAY = 1
# xAI credit reward rate by cumulative spend in a billing cycle (applies to the whole amount).
REWARD_TIERS: tuple[tuple[float, float], ...] = ((1000.0, 0.20), (500.0, 0.15), (200.0, 0.10))
# Today's pace stands in for the daily mean only after this much of the day: a few minutes of
# data would page on noise.
MIN_PACE_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Cycle:
    """A billing cycle: [start, end), both at 00:00 UTC."""

    start: datetime
    end: datetime

    def contains(self, day: date) -> bool:
        return self.start.date() <= day < self.end.date()


def _reset_instant(year: int, month: int, day: int) -> datetime:
    """00:00 UTC of the reset day in that month, clamped to the month's last day."""
    last = calendar.monthrange(year, month)[1]
    return datetime(year, month, min(day, last), tzinfo=UTC)


def _shift_month(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


def cycle_for(now: datetime, cap_reset_day: int, means: CapResetDayMeans) -> Cycle:
    """The billing cycle that contains `now`.

    day_of_month: the cap resets on that day of every month at 00:00 UTC (day 31 means the last
    day of shorter months). days_remaining: it resets that many days after today's 00:00 UTC, and
    the cycle began on the same day of the month before.
    """
    now = now.astimezone(UTC)  # the reset is at 00:00 UTC, whatever zone the clock is in
    if means is CapResetDayMeans.DAYS_REMAINING:
        midnight = datetime(now.year, now.month, now.day, tzinfo=UTC)
        end = midnight + timedelta(days=max(cap_reset_day, 1))
        year, month = _shift_month(end.year, end.month, -1)
        return Cycle(_reset_instant(year, month, end.day), end)

    day = max(cap_reset_day, 1)  # past the month's last day is its last day (_reset_instant)
    this_month = _reset_instant(now.year, now.month, day)
    if now >= this_month:
        year, month = _shift_month(now.year, now.month, 1)
        return Cycle(this_month, _reset_instant(year, month, day))
    year, month = _shift_month(now.year, now.month, -1)
    return Cycle(_reset_instant(year, month, day), this_month)


def usable_reset_day(cap_reset_day: int | None) -> int | None:
    """cap_reset_day if the cycle math can use it: absent or past 31 fits neither reading."""
    if cap_reset_day is None or not 0 <= cap_reset_day <= MAX_CAP_RESET_DAY:
        return None
    return cap_reset_day


def cycle_of(now: datetime, cap_reset_day: int | None, means: CapResetDayMeans) -> Cycle:
    """The cycle containing `now` for a raw cap_reset_day; the calendar month under either reading
    when the value is absent or impossible (a fallback of "1 day left" would end it tomorrow)."""
    day = usable_reset_day(cap_reset_day)
    if day is None:
        return cycle_for(now, FALLBACK_CAP_RESET_DAY, CapResetDayMeans.DAY_OF_MONTH)
    return cycle_for(now, day, means)


def reset_day_of_month(cap_reset_day: int | None, means: CapResetDayMeans, now: datetime) -> int:
    """The day of the month the cap resets on, whichever reading of cap_reset_day is in use."""
    day = usable_reset_day(cap_reset_day)
    if day is None:
        return FALLBACK_CAP_RESET_DAY
    if means is CapResetDayMeans.DAY_OF_MONTH:
        return max(day, 1)
    return cycle_for(now, day, CapResetDayMeans.DAYS_REMAINING).end.day


def sum_in_cycle(daily: Mapping[date, int], cycle: Cycle, until: date) -> int:
    """Total of the days inside the cycle up to and including `until`."""
    return sum(count for day, count in daily.items() if cycle.contains(day) and day <= until)


def spend_usd(posts: float, post_read_usd: float) -> float:
    return posts * post_read_usd


def billable_projection(projected: float, consumed: float, cap: int | None) -> float:
    """The Posts a cycle's projected spend can come from: the X API refuses reads past the cap,
    so a projection beyond it spends no more than the cap (or than what is consumed already)."""
    if cap is None or cap <= 0:
        return projected
    return max(consumed, min(projected, cap))


def reward_ratio(spend: float) -> float:
    """The xAI credit reward rate reached by this cycle's cumulative spend."""
    for threshold, ratio in REWARD_TIERS:
        if spend >= threshold:
            return ratio
    return 0.0


def spend_to_next_tier(spend: float) -> float | None:
    """How much more spend unlocks the next reward tier; None at the top tier."""
    above = [threshold for threshold, _ in REWARD_TIERS if threshold > spend]
    return min(above) - spend if above else None


def credits_depletion(
    balance: float, daily: Mapping[date, int], now: datetime, post_read_usd: float, days: int = 7
) -> datetime | None:
    """When the balance runs out at the mean Post-read spend of the last `days` complete days.

    The mean is over the days the data holds (a day it lacks is unknown, not a day without
    spend); with no complete day yet, today's pace so far stands in.
    """
    now = now.astimezone(UTC)
    today = now.date()
    window = [
        daily[day]
        for day in (today - timedelta(days=offset) for offset in range(1, days + 1))
        if day in daily
    ]
    if window:
        posts_per_day = sum(window) / len(window)
    else:
        midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
        elapsed = (now - midnight).total_seconds()
        if elapsed < MIN_PACE_SECONDS or today not in daily:
            return None
        posts_per_day = daily[today] / elapsed * 86400
    per_day = spend_usd(posts_per_day, post_read_usd)
    if per_day <= 0:
        return None
    # Capped at a century so that a tiny spend rate never overflows a datetime.
    seconds = min(max(balance, 0.0) / per_day * 86400, 100 * 365 * 86400.0)
    return now + timedelta(seconds=seconds)
