"""Seeded synthetic usage traces: what the usage endpoint would show, and the hidden truth."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

__all__ = [
    "CYCLE_POINTS",
    "PATTERNS",
    "POLL_SECONDS",
    "Case",
    "intraday_shape",
    "make_case",
    "posts_before",
]

PATTERNS: tuple[str, ...] = (
    "weekly",
    "growth",
    "decline",
    "exponential",
    "spike",
    "step",
    "new_project",
    "zero",
)
CYCLE_POINTS: dict[str, int] = {"early": 3, "middle": 15, "late": 25}  # day of the billing cycle
POLL_SECONDS = 300  # the exporter's default poll_interval: one gauge sample per poll
HISTORY_DAYS = 90  # the most the usage endpoint returns
MISSING_DAY_RATE = 0.03  # share of past days the API answers with null
_DAY = timedelta(days=1)
_LEAD_DAYS = 100  # trace days before the cycle starts


@dataclass(frozen=True, slots=True)
class Case:
    """One forecasting situation: the visible inputs of forecast_cycle and the hidden truth."""

    pattern: str
    seed: int
    cycle_day: int
    now: datetime
    cycle_start: datetime
    cycle_end: datetime
    previous_cycle_start: datetime
    daily: dict[date, int]  # what the usage endpoint shows: past days and today's partial day
    consumed: int  # project_usage at `now`
    true_total: float  # hidden: Posts consumed over the whole cycle
    first_day: date
    totals: tuple[float, ...]  # hidden: Posts per day from first_day
    shapes: tuple[tuple[float, ...], ...]  # per day, cumulative share of the day at each hour 0..24
    prefix: tuple[float, ...]  # Posts before the start of each day from first_day

    def posts_before(self, instant: datetime) -> float:
        """True Posts consumed from first_day up to `instant`."""
        return posts_before(self.first_day, self.totals, self.shapes, self.prefix, instant)

    def gauge_samples(self, window: timedelta, across_reset: bool) -> list[tuple[float, float]]:
        """(seconds relative to now, xapi_project_posts_consumed) as Prometheus would store them.

        Before cycle_start the gauge held the previous cycle's consumption; with
        `across_reset=False` those samples are left out (a range that starts at the reset).
        """
        origin = datetime.combine(self.first_day, time(), UTC)
        now = (self.now - origin) / _DAY
        start = (self.cycle_start - origin) / _DAY
        previous = (self.previous_cycle_start - origin) / _DAY
        at_start = self._posts_at(start)
        at_previous = self._posts_at(previous)
        samples = []
        steps = int(window.total_seconds() // POLL_SECONDS)
        for k in range(steps, -1, -1):
            offset = now - k * POLL_SECONDS / 86_400.0
            if offset >= start:
                value = self._posts_at(offset) - at_start
            elif across_reset and offset >= previous:
                value = self._posts_at(offset) - at_previous
            else:
                continue
            samples.append((-k * POLL_SECONDS * 1.0, value))
        return samples

    def _posts_at(self, offset: float) -> float:
        return _posts_at(self.totals, self.shapes, self.prefix, offset)

    def true_crossing(self, cap: float) -> datetime | None:
        """Instant the true cycle consumption reaches `cap`, None if not before cycle_end."""
        base = self.posts_before(self.cycle_start)
        low, high = self.cycle_start, self.cycle_end
        if self.posts_before(high) - base < cap:
            return None
        for _ in range(40):  # bisection to well under a second
            middle = low + (high - low) / 2
            if self.posts_before(middle) - base >= cap:
                high = middle
            else:
                low = middle
        return high


def make_case(pattern: str, seed: int, cycle_day: int) -> Case:
    """A reproducible case of `pattern` (one of PATTERNS) seen on day `cycle_day` of its cycle."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}")
    rng = random.Random(f"{pattern}:{seed}:{cycle_day}")
    cycle_start = datetime(2026, 1, 1, tzinfo=UTC) + rng.randrange(365) * _DAY
    cycle_end = cycle_start + rng.randint(28, 31) * _DAY
    previous_cycle_start = cycle_start - rng.randint(28, 31) * _DAY
    now = cycle_start + (cycle_day - 1 + rng.uniform(0.02, 0.98)) * _DAY
    first_day = cycle_start.date() - _LEAD_DAYS * _DAY
    n_days = (cycle_end.date() - first_day).days
    today = (now.date() - first_day).days

    totals, project_start = _totals(pattern, rng, first_day, n_days, today)
    shapes = tuple(intraday_shape(rng) for _ in range(n_days))
    prefix = [0.0]
    for value in totals[:-1]:
        prefix.append(prefix[-1] + value)

    daily: dict[date, int] = {}
    zeros_before_start = rng.random() < 0.5  # the API may send 0 or nothing before a project
    for index in range(max(today - HISTORY_DAYS + 1, 0), today):
        if rng.random() < MISSING_DAY_RATE:
            continue
        if index < project_start and not zeros_before_start:
            continue
        daily[first_day + index * _DAY] = round(totals[index])

    def before(instant: datetime) -> float:
        return posts_before(first_day, totals, shapes, prefix, instant)

    daily[now.date()] = round(before(now) - prefix[today])
    in_cycle = before(now) - before(cycle_start)
    # project_usage is authoritative and can differ a little from the sum of the daily values.
    consumed = max(round(in_cycle * (1.0 + rng.gauss(0.0, 0.002))), 0)
    true_total = sum(totals[(cycle_start.date() - first_day).days :])
    return Case(
        pattern=pattern,
        seed=seed,
        cycle_day=cycle_day,
        now=now,
        cycle_start=cycle_start,
        cycle_end=cycle_end,
        previous_cycle_start=previous_cycle_start,
        daily=daily,
        consumed=consumed,
        true_total=true_total,
        first_day=first_day,
        totals=tuple(totals),
        shapes=shapes,
        prefix=tuple(prefix),
    )


def _totals(
    pattern: str, rng: random.Random, first_day: date, n_days: int, today: int
) -> tuple[list[float], int]:
    """True Posts per day and the index of the project's first day."""
    base = math.exp(rng.uniform(math.log(2_000), math.log(200_000)))
    weekend = rng.uniform(0.3, 0.6) if pattern == "weekly" else rng.uniform(0.5, 1.0)
    weekday = [rng.uniform(0.9, 1.1) for _ in range(5)] + [weekend, weekend * rng.uniform(0.8, 1.1)]
    sigma = rng.uniform(0.1, 0.3)
    project_start = 0

    levels = [base] * n_days
    if pattern == "growth":
        rate = rng.uniform(0.004, 0.012)
        levels = [base * (1.0 + rate * i) for i in range(n_days)]
    elif pattern == "decline":
        rate = rng.uniform(0.002, 0.005)
        levels = [base * max(1.0 - rate * i, 0.05) for i in range(n_days)]
    elif pattern == "exponential":
        start = today - rng.randint(14, 42)
        rate = rng.uniform(0.03, 0.07)
        levels = [base * math.exp(rate * max(i - start, 0)) for i in range(n_days)]
    elif pattern == "step":
        start = today - rng.randint(1, 14)
        jump = rng.uniform(1.8, 3.5)
        levels = [base * (jump if i >= start else 1.0) for i in range(n_days)]
    elif pattern == "new_project":
        project_start = today - rng.randint(1, 3)
        levels = [base if i >= project_start else 0.0 for i in range(n_days)]
        levels[project_start] *= rng.uniform(0.3, 1.0)  # created during its first day
    elif pattern == "zero":
        levels = [0.0] * n_days

    totals = []
    for i, level in enumerate(levels):
        noise = math.exp(rng.gauss(0.0, sigma) - sigma * sigma / 2.0)
        mean = level * weekday[(first_day + i * _DAY).weekday()] * noise
        totals.append(max(mean + math.sqrt(mean) * rng.gauss(0.0, 1.0), 0.0))  # Poisson-like
    if pattern == "spike":
        totals[today - rng.randint(1, 3)] *= rng.uniform(5.0, 15.0)
    return totals, project_start


def intraday_shape(rng: random.Random) -> tuple[float, ...]:
    """Cumulative share of a day's Posts at each hour 0..24: a noisy diurnal curve."""
    weights = [
        (1.0 + 0.5 * math.cos(2.0 * math.pi * (hour + 0.5 - 15.0) / 24.0))
        * math.exp(rng.gauss(0.0, 0.25))
        for hour in range(24)
    ]
    total = sum(weights)
    shape = [0.0]
    for weight in weights:
        shape.append(shape[-1] + weight / total)
    shape[-1] = 1.0
    return tuple(shape)


def posts_before(
    first_day: date,
    totals: Sequence[float],
    shapes: Sequence[Sequence[float]],
    prefix: Sequence[float],
    instant: datetime,
) -> float:
    """True Posts consumed from first_day up to `instant`, linear within each hour."""
    offset = (instant - datetime.combine(first_day, time(), UTC)) / _DAY
    return _posts_at(totals, shapes, prefix, offset)


def _posts_at(
    totals: Sequence[float],
    shapes: Sequence[Sequence[float]],
    prefix: Sequence[float],
    offset: float,
) -> float:
    """True Posts consumed from first_day up to `offset` days after it."""
    index = min(max(math.floor(offset), 0), len(totals) - 1)
    hours = min(max((offset - index) * 24.0, 0.0), 24.0)
    hour = min(int(hours), 23)
    shape = shapes[index]
    share = shape[hour] + (shape[hour + 1] - shape[hour]) * (hours - hour)
    return prefix[index] + totals[index] * share
