"""Rolling-origin forecast cases cut from real daily series: tuning, held-out, independent."""

from __future__ import annotations

import csv
import gzip
import itertools
import math
import os
import random
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from benchmarks import traces
from benchmarks.traces import HISTORY_DAYS, Case, intraday_shape
from exporter.forecast import KEEP_DAYS

__all__ = [
    "CYCLE_DAYS",
    "DATA_ENV",
    "DATA_NAME",
    "RealCase",
    "data_file",
    "held_out_from",
    "independent_cases",
    "independent_series",
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
# The independent series (benchmarks/data/README.md): never used for a design decision.
INDEPENDENT_FILE = Path(__file__).resolve().parent / "data" / "chicago-l-entries.csv.gz"
INDEPENDENT_STEP_DAYS = 47  # a prime, so cycles start on every weekday; ~120 cycles per station
INDEPENDENT_SCALE = 10_000  # thousands of entries as Posts read: medians 8,900-159,000 a day
_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class RealCase:
    """One forecasting situation cut from the real series, and which part of it it belongs to."""

    part: str  # "tuning" or "held-out"; for an independent series, the station
    case: Case


def data_file() -> Path | None:
    """The real series: $XAPI_BENCH_DATA, else shared/data beside the repository; None if absent."""
    root = Path(__file__).resolve().parent.parent
    directory = Path(os.environ.get(DATA_ENV) or root.parent / "shared" / "data")
    path = directory / DATA_NAME
    return path if path.is_file() else None


def load_series(path: Path, scale: float = SCALE) -> tuple[date, tuple[float, ...]]:
    """First date and daily Page.Loads (x `scale`) of the CSV, checked to be consecutive days."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    dates = [datetime.strptime(row["Date"], "%m/%d/%Y").date() for row in rows]
    if any(b - a != _DAY for a, b in itertools.pairwise(dates)):
        raise ValueError(f"{path}: dates are not consecutive days")
    values = tuple(float(row["Page.Loads"].replace(",", "")) * scale for row in rows)
    return dates[0], values


def held_out_from(first_day: date, totals: Sequence[float]) -> date:
    """The first day of the series' held-out part: its last HELD_OUT_DAYS."""
    return first_day + (len(totals) - HELD_OUT_DAYS) * _DAY


def real_cases(first_day: date, totals: Sequence[float]) -> Iterator[RealCase]:
    """Billing cycles of 28-31 days starting every CYCLE_STEP_DAYS, each asked on CYCLE_DAYS.

    A cycle whose days all fall before the held-out years is a tuning case, one that starts in
    them a held-out case (its history may reach back into the tuning years: that is input, not
    a truth scored); a cycle that straddles the boundary is left out.
    """
    boundary = len(totals) - HELD_OUT_DAYS

    def part(start: int, length: int) -> str | None:
        if start < boundary < start + length:
            return None
        return "held-out" if start >= boundary else "tuning"

    return _cut(first_day, totals, CYCLE_STEP_DAYS, "real-series", part)


def independent_series() -> list[tuple[str, date, tuple[float, ...]]]:
    """Each station of the independent file: name, first day, daily values x INDEPENDENT_SCALE."""
    with gzip.open(INDEPENDENT_FILE, "rt", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    dates = [date.fromisoformat(row["date"]) for row in rows]
    if any(b - a != _DAY for a, b in itertools.pairwise(dates)):
        raise ValueError(f"{INDEPENDENT_FILE}: dates are not consecutive days")
    series = []
    for name in list(rows[0])[1:]:
        known = [k for k, row in enumerate(rows) if row[name] != ""]
        first, last = known[0], known[-1]
        if len(known) != last - first + 1:
            raise ValueError(f"{INDEPENDENT_FILE}: column {name} has a gap")
        values = tuple(float(row[name]) * INDEPENDENT_SCALE for row in rows[first : last + 1])
        series.append((name, dates[first], values))
    return series


def independent_cases(name: str, first_day: date, totals: Sequence[float]) -> Iterator[RealCase]:
    """Billing cycles starting every INDEPENDENT_STEP_DAYS of one station, part = its name.

    A cycle whose true total is zero (the station closed throughout) has no percentage error
    and is left out.
    """

    def part(start: int, length: int) -> str | None:
        return name if any(totals[start : start + length]) else None

    return _cut(first_day, totals, INDEPENDENT_STEP_DAYS, f"independent:{name}", part)


def _cut(
    first_day: date,
    totals: Sequence[float],
    step: int,
    seed: str,
    part_of: Callable[[int, int], str | None],
) -> Iterator[RealCase]:
    """Cycles of 28-31 days starting every `step` days after the first HISTORY_DAYS.

    `part_of(start, length)` names the part a cycle belongs to, or None to leave it out.
    """
    totals = tuple(totals)
    rng = random.Random(seed)
    shapes = tuple(intraday_shape(rng) for _ in totals)
    prefix = [0.0]
    for value in totals[:-1]:
        prefix.append(prefix[-1] + value)
    prefixes = tuple(prefix)
    origin = datetime.combine(first_day, time(), UTC)
    for start in range(HISTORY_DAYS, len(totals), step):
        length = rng.randint(28, 31)
        if start + length > len(totals):
            break
        part = part_of(start, length)
        if part is None:
            continue
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
    # What the exporter holds: the days it has kept from its earlier answers (up to KEEP_DAYS).
    daily = {
        first_day + index * _DAY: round(totals[index])
        for index in range(max(today - KEEP_DAYS, 0), today)
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
