"""Rolling-origin forecast cases cut from a real daily series: tuning years, held-out years."""

from __future__ import annotations

import csv
import itertools
import math
import os
import random
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from benchmarks import traces
from benchmarks.traces import HISTORY_DAYS, Case, intraday_shape

__all__ = [
    "CYCLE_DAYS",
    "DATA_ENV",
    "RealCase",
    "data_file",
    "load_series",
    "percentile",
    "real_cases",
]

DATA_ENV = "XAPI_BENCH_DATA"  # a directory holding the CSV, when it is not at ../shared/data
DATA_NAME = "daily-website-visitors.csv"
CYCLE_DAYS = (6, 11, 18, 25)  # day of the billing cycle the forecast is asked on
CYCLE_STEP_DAYS = 4  # a new billing cycle starts every 4 days across the series
HELD_OUT_DAYS = 730  # the last two years: never used for a design decision
SCALE = 100  # page loads (about 1,000-8,000 a day) as Posts read (100,000-800,000 a day)
_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class RealCase:
    """One forecasting situation cut from the real series, and which part of it it belongs to."""

    part: str  # "tuning" or "held-out"
    case: Case


def data_file() -> Path | None:
    """The real series: $XAPI_BENCH_DATA, else shared/data beside the repository; None if absent."""
    root = Path(__file__).resolve().parent.parent
    directory = Path(os.environ.get(DATA_ENV) or root.parent / "shared" / "data")
    path = directory / DATA_NAME
    return path if path.is_file() else None


def load_series(path: Path) -> tuple[date, tuple[float, ...]]:
    """First date and the daily Page.Loads (x SCALE) of the CSV, checked to be consecutive days."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    dates = [datetime.strptime(row["Date"], "%m/%d/%Y").date() for row in rows]
    if any(b - a != _DAY for a, b in itertools.pairwise(dates)):
        raise ValueError(f"{path}: dates are not consecutive days")
    values = tuple(float(row["Page.Loads"].replace(",", "")) * SCALE for row in rows)
    return dates[0], values


def real_cases(first_day: date, totals: Sequence[float]) -> Iterator[RealCase]:
    """Billing cycles of 28-31 days starting every CYCLE_STEP_DAYS, each asked on CYCLE_DAYS.

    A cycle whose days all fall before the held-out years is a tuning case, one that starts in
    them a held-out case (its history may reach back into the tuning years: that is input, not
    a truth scored); a cycle that straddles the boundary is left out.
    """
    totals = tuple(totals)
    rng = random.Random("real-series")
    shapes = tuple(intraday_shape(rng) for _ in totals)
    prefix = [0.0]
    for value in totals[:-1]:
        prefix.append(prefix[-1] + value)
    prefixes = tuple(prefix)
    boundary = len(totals) - HELD_OUT_DAYS
    origin = datetime.combine(first_day, time(), UTC)
    for start in range(HISTORY_DAYS, len(totals), CYCLE_STEP_DAYS):
        length = rng.randint(28, 31)
        if start + length > len(totals):
            break
        if start < boundary < start + length:
            continue
        part = "held-out" if start >= boundary else "tuning"
        cycle_start = origin + start * _DAY
        for cycle_day in CYCLE_DAYS:
            now = cycle_start + (cycle_day - 1 + rng.uniform(0.02, 0.98)) * _DAY
            case = _case(first_day, totals, shapes, prefixes, cycle_start, length, cycle_day, now)
            yield RealCase(part, case)


def _case(
    first_day: date,
    totals: tuple[float, ...],
    shapes: tuple[tuple[float, ...], ...],
    prefix: tuple[float, ...],
    cycle_start: datetime,
    length: int,
    cycle_day: int,
    now: datetime,
) -> Case:
    def posts_before(instant: datetime) -> float:
        return traces.posts_before(first_day, totals, shapes, prefix, instant)

    today = (now.date() - first_day).days
    start = (cycle_start.date() - first_day).days
    daily = {
        first_day + index * _DAY: round(totals[index])
        for index in range(max(today - HISTORY_DAYS + 1, 0), today)
    }
    daily[now.date()] = round(posts_before(now) - prefix[today])
    return Case(
        pattern="real",
        seed=0,
        cycle_day=cycle_day,
        now=now,
        cycle_start=cycle_start,
        cycle_end=cycle_start + length * _DAY,
        previous_cycle_start=cycle_start - length * _DAY,
        daily=daily,
        consumed=math.floor(posts_before(now) - posts_before(cycle_start)),
        true_total=sum(totals[start : start + length]),
        first_day=first_day,
        totals=totals,
        shapes=shapes,
        prefix=prefix,
    )


def percentile(values: Sequence[float], share: float) -> float:
    """The `share` quantile (0..1) of `values`, by linear interpolation."""
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]
