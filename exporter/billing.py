"""Pure billing math: cycle boundaries, cycle totals, spend and xAI reward tiers."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from exporter.config import CapResetDayMeans

# Without cap_reset_day (the overview-page shape) the cycle is taken to be the calendar month.
FALLBACK_CAP_RESET_DAY = 1
# xAI credit reward rate by cumulative spend in a billing cycle (applies to the whole amount).
REWARD_TIERS: tuple[tuple[float, float], ...] = ((1000.0, 0.20), (500.0, 0.15), (200.0, 0.10))


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
    if means is CapResetDayMeans.DAYS_REMAINING:
        midnight = datetime(now.year, now.month, now.day, tzinfo=UTC)
        end = midnight + timedelta(days=max(cap_reset_day, 1))
        year, month = _shift_month(end.year, end.month, -1)
        return Cycle(_reset_instant(year, month, end.day), end)

    day = min(max(cap_reset_day, 1), 31)
    this_month = _reset_instant(now.year, now.month, day)
    if now >= this_month:
        year, month = _shift_month(now.year, now.month, 1)
        return Cycle(this_month, _reset_instant(year, month, day))
    year, month = _shift_month(now.year, now.month, -1)
    return Cycle(_reset_instant(year, month, day), this_month)


def reset_day_of_month(cap_reset_day: int | None, means: CapResetDayMeans, now: datetime) -> int:
    """The day of the month the cap resets on, whichever reading of cap_reset_day is in use."""
    raw = FALLBACK_CAP_RESET_DAY if cap_reset_day is None else cap_reset_day
    if means is CapResetDayMeans.DAY_OF_MONTH:
        return raw
    return cycle_for(now, raw, CapResetDayMeans.DAYS_REMAINING).end.day


def sum_in_cycle(daily: Mapping[date, int], cycle: Cycle, until: date) -> int:
    """Total of the days inside the cycle up to and including `until`."""
    return sum(count for day, count in daily.items() if cycle.contains(day) and day <= until)


def spend_usd(posts: float, post_read_usd: float) -> float:
    return posts * post_read_usd


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
    """When the balance runs out at the mean Post-read spend of the last `days` complete days."""
    today = now.date()
    window = [daily.get(today - timedelta(days=offset), 0) for offset in range(1, days + 1)]
    per_day = spend_usd(sum(window) / days, post_read_usd)
    if per_day <= 0:
        return None
    # Capped at a century so that a tiny spend rate never overflows a datetime.
    seconds = min(max(balance, 0.0) / per_day * 86400, 100 * 365 * 86400.0)
    return now + timedelta(seconds=seconds)
