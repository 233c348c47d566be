"""The forecast benchmark's real series: what the files hold, how cycles are cut and grouped."""

from __future__ import annotations

from datetime import date, timedelta

from benchmarks.forecast import Outcome, by_start_month, score
from benchmarks.real_series import (
    CYCLE_DAYS,
    HELD_OUT_DAYS,
    INDEPENDENT_SCALE,
    INDEPENDENT_STEP_DAYS,
    held_out_from,
    independent_cases,
    independent_series,
    real_cases,
)
from benchmarks.traces import HISTORY_DAYS

DAY = timedelta(days=1)


def test_the_independent_file_holds_20_stations_of_5698_consecutive_days() -> None:
    series = {name: (first, totals) for name, first, totals in independent_series()}
    assert len(series) == 20
    assert all(len(totals) == 5698 for _, totals in series.values())
    # Clark/Lake is on its own dates; the others were un-lagged by 14 days (data/README.md).
    assert series["Clark_Lake"][0] == date(2001, 1, 22)
    assert {first for name, (first, _) in series.items() if name != "Clark_Lake"} == {
        date(2001, 1, 8)
    }
    # 15,732 entries at Clark/Lake on its first day, in thousands in the file.
    assert series["Clark_Lake"][1][0] == 15.732 * INDEPENDENT_SCALE
    assert all(value >= 0.0 for _, totals in series.values() for value in totals)


def test_independent_cycles_are_named_by_station_and_skip_cycles_with_no_usage() -> None:
    first = date(2020, 1, 1)
    totals = [100.0] * (HISTORY_DAYS + 3 * INDEPENDENT_STEP_DAYS)
    closed = HISTORY_DAYS + INDEPENDENT_STEP_DAYS  # the second cycle's days all zero
    totals[closed : closed + INDEPENDENT_STEP_DAYS] = [0.0] * INDEPENDENT_STEP_DAYS
    cases = list(independent_cases("Somewhere", first, totals))
    starts = {real.case.cycle_start.date() for real in cases}
    assert {real.part for real in cases} == {"Somewhere"}
    assert first + closed * DAY not in starts
    assert first + HISTORY_DAYS * DAY in starts
    assert first + (closed + INDEPENDENT_STEP_DAYS) * DAY in starts
    assert sorted({real.case.cycle_day for real in cases}) == list(CYCLE_DAYS)
    assert all(real.case.true_total > 0.0 for real in cases)


def test_the_month_table_groups_every_cycle_day_by_the_month_its_cycle_starts_in() -> None:
    # 1 Aug + 90 days of history: cycles start every 4 days from 30 Oct, into December.
    first = date(2021, 8, 1)
    cases = [real.case for real in real_cases(first, [1000.0] * (HISTORY_DAYS + 70))]
    by_day: dict[int, list[Outcome]] = {day: [] for day in CYCLE_DAYS}
    for case in cases:
        by_day[case.cycle_day].append(score(case, cap=10**9))
    months = by_start_month(by_day)
    assert list(months) == [10, 11, 12]
    assert sum(map(len, months.values())) == len(cases)
    # A day-25 forecast of an October cycle is asked in November and still counts for October.
    assert any(o.now.month == 11 for o in months[10])
    for month, outcomes in months.items():
        assert {o.cycle_start.month for o in outcomes} == {month}
        assert {(o.now - o.cycle_start).days + 1 for o in outcomes} == set(CYCLE_DAYS)


def test_held_out_cycles_start_on_or_after_held_out_from_and_tuning_ones_end_before_it() -> None:
    first = date(2021, 1, 1)
    totals = [1000.0] * (HISTORY_DAYS + HELD_OUT_DAYS + 120)
    boundary = held_out_from(first, totals)
    assert boundary == first + (HISTORY_DAYS + 120) * DAY
    cases = list(real_cases(first, totals))
    assert {real.part for real in cases} == {"tuning", "held-out"}
    for real in cases:
        if real.part == "held-out":
            assert real.case.cycle_start.date() >= boundary
        else:
            assert real.case.cycle_end.date() <= boundary
