"""Forecast benchmark: forecast_cycle against run-rate and predict_linear, generated and real."""

from __future__ import annotations

import calendar
import dataclasses
import functools
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import exporter.forecast as forecast_module
from benchmarks.real_series import (
    CYCLE_DAYS,
    DATA_ENV,
    RealCase,
    data_file,
    independent_cases,
    independent_series,
    load_series,
    percentile,
    real_cases,
)
from benchmarks.traces import CYCLE_POINTS, PATTERNS, Case, make_case
from exporter.forecast import Forecast, forecast_cycle

SEEDS = range(30)
TARGET_RATIO = 0.6  # the model's overall median error must be at most this share of the baseline's
REAL_TARGET_RATIO = 0.7  # the same on the real series' held-out years
CLEARLY_WORSE_POINTS = 2.0  # "clearly worse": over 2 points of error above the better baseline
BAND_TARGET = (0.75, 0.85)  # the 80% band's coverage, overall
BAND_FLOOR = 0.6  # ... and in every pattern and cycle day
PREDICT_LINEAR_RANGE = timedelta(days=7)
POLL_INTERVAL = timedelta(minutes=5)  # the default poll_interval
_DAY = timedelta(days=1)

Line = tuple[float, float]  # (value at now, slope per second)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Every method's answer for one case, beside the truth."""

    now: datetime
    cycle_start: datetime
    truth: float
    projected: float
    lower: float
    upper: float
    run_rate: float
    predict_linear: float
    predict_linear_reset: float
    cap: int
    true_crossing: datetime | None
    crossings: dict[str, datetime | None]  # by method


@functools.cache
def outcome(pattern: str, seed: int, cycle_day: int) -> Outcome:
    """Score one generated case with every method; cached, as both tables read the same cases."""
    case = make_case(pattern, seed, cycle_day)
    cap = round(
        case.true_total * random.Random(f"cap:{pattern}:{seed}:{cycle_day}").uniform(0.7, 1.3)
    )
    return score(case, cap)


def forecast_case(case: Case, cap: int | None = None) -> Forecast:
    """forecast_cycle on what the usage endpoint shows in `case`."""
    return forecast_cycle(
        daily=case.daily,
        consumed=case.consumed,
        now=case.now,
        cycle_start=case.cycle_start,
        cycle_end=case.cycle_end,
        cap=cap,
    )


def score(case: Case, cap: int) -> Outcome:
    """Every method's answer for `case`, beside the truth."""
    forecast = forecast_case(case, cap)
    in_cycle = least_squares_line(case.gauge_samples(PREDICT_LINEAR_RANGE, across_reset=False))
    across = in_cycle
    if case.now - PREDICT_LINEAR_RANGE < case.cycle_start:
        across = least_squares_line(case.gauge_samples(PREDICT_LINEAR_RANGE, across_reset=True))
    return Outcome(
        now=case.now,
        cycle_start=case.cycle_start,
        truth=case.true_total,
        projected=forecast.projected,
        lower=forecast.lower,
        upper=forecast.upper,
        run_rate=run_rate(case),
        predict_linear=predict_linear(in_cycle, case),
        predict_linear_reset=predict_linear(across, case),
        cap=cap,
        true_crossing=case.true_crossing(cap),
        crossings={
            "model": forecast.exhaustion,
            "run-rate": _run_rate_crossing(case, cap),
            "pred_lin": _line_crossing(in_cycle, case, cap),
        },
    )


def run_rate(case: Case) -> float:
    """Naive run-rate: consumed / elapsed days x cycle length."""
    elapsed = (case.now - case.cycle_start) / _DAY
    return case.consumed / elapsed * ((case.cycle_end - case.cycle_start) / _DAY)


def least_squares_line(samples: Sequence[tuple[float, float]]) -> Line | None:
    """The regression predict_linear() computes: value at now and slope; None under 2 samples."""
    if len(samples) < 2:
        return None
    n = len(samples)
    t_mean = sum(t for t, _ in samples) / n
    v_mean = sum(v for _, v in samples) / n
    t_ss = sum((t - t_mean) ** 2 for t, _ in samples)
    slope = sum((t - t_mean) * (v - v_mean) for t, v in samples) / t_ss
    return v_mean - slope * t_mean, slope


def predict_linear(line: Line | None, case: Case) -> float:
    """predict_linear(xapi_project_posts_consumed[7d], cycle end - now); no result -> consumed."""
    if line is None:
        return float(case.consumed)
    value, slope = line
    return value + slope * (case.cycle_end - case.now).total_seconds()


def ape(predicted: float, truth: float) -> float:
    """Absolute percentage error; 0 when both are zero."""
    if truth == 0.0:
        return 0.0 if abs(predicted) < 0.5 else math.inf
    return abs(predicted - truth) / truth * 100.0


def _run_rate_crossing(case: Case, cap: int) -> datetime | None:
    if case.consumed >= cap:
        return case.now
    rate = case.consumed / ((case.now - case.cycle_start) / _DAY)
    if rate <= 0.0:
        return None
    crossing = case.now + (cap - case.consumed) / rate * _DAY
    return crossing if crossing < case.cycle_end else None


def _line_crossing(line: Line | None, case: Case, cap: int) -> datetime | None:
    if line is None:
        return None
    value, slope = line
    if value >= cap:
        return case.now
    if slope <= 0.0:
        return None
    crossing = case.now + timedelta(seconds=(cap - value) / slope)
    return crossing if crossing < case.cycle_end else None


def _percent(value: float) -> str:
    return f"{value:7.1f}%" if math.isfinite(value) else "    inf"


@dataclass(frozen=True, slots=True)
class GeneratedSummary:
    """The generated traces' overall figures (all patterns but `zero`)."""

    model: float  # median APE
    baseline: float  # the better baseline's median APE
    coverage: float  # share of true totals inside the band
    lowest_coverage: float  # in the worst pattern x cycle point row


def band_verdict(coverage: float, lowest: float) -> str:
    """One line: overall coverage against BAND_TARGET, the worst group against BAND_FLOOR."""
    low, high = BAND_TARGET
    met = low <= coverage <= high and lowest >= BAND_FLOOR
    return (
        f"band {coverage:.0%} (target {low:.0%}-{high:.0%}), lowest group {lowest:.0%} "
        f"(floor {BAND_FLOOR:.0%}): {'PASS' if met else 'FAIL'}"
    )


def _accuracy_table() -> GeneratedSummary:
    """Print median APE and band coverage per pattern and cycle point; return the overall."""
    header = (
        f"{'pattern':<12} {'point':<7} {'n':>3}  {'model':>8} {'run-rate':>8} "
        f"{'pred_lin':>8} {'pl_reset':>8}  {'band80':>6}"
    )
    print("Median absolute percentage error of the projected cycle total")
    print(header)
    print("-" * len(header))
    overall: dict[str, list[float]] = {"model": [], "run": [], "pl": [], "pl_reset": []}
    covered = scored = 0
    lowest = 1.0
    for pattern in PATTERNS:
        for point, cycle_day in CYCLE_POINTS.items():
            errors: dict[str, list[float]] = {key: [] for key in overall}
            inside = 0
            for seed in SEEDS:
                result = outcome(pattern, seed, cycle_day)
                errors["model"].append(ape(result.projected, result.truth))
                errors["run"].append(ape(result.run_rate, result.truth))
                errors["pl"].append(ape(result.predict_linear, result.truth))
                errors["pl_reset"].append(ape(result.predict_linear_reset, result.truth))
                inside += result.lower <= result.truth <= result.upper
            medians = {key: statistics.median(values) for key, values in errors.items()}
            print(
                f"{pattern:<12} {point:<7} {len(SEEDS):>3}  {_percent(medians['model'])} "
                f"{_percent(medians['run'])} {_percent(medians['pl'])} "
                f"{_percent(medians['pl_reset'])}  {inside / len(SEEDS):6.0%}"
            )
            if pattern != "zero":  # every method is exact on zero usage: it would only dilute
                for key, values in errors.items():
                    overall[key].extend(values)
                covered += inside
                scored += len(SEEDS)
                lowest = min(lowest, inside / len(SEEDS))
    medians = {key: statistics.median(values) for key, values in overall.items()}
    print("-" * len(header))
    print(
        f"{'overall':<12} {'':<7} {scored:>3}  {_percent(medians['model'])} "
        f"{_percent(medians['run'])} {_percent(medians['pl'])} "
        f"{_percent(medians['pl_reset'])}  {covered / scored:6.0%}"
    )
    print("(overall leaves out `zero`, where every method is exact)")
    return GeneratedSummary(
        model=medians["model"],
        baseline=min(medians["run"], medians["pl"]),
        coverage=covered / scored,
        lowest_coverage=lowest,
    )


def _exhaustion_table() -> None:
    """Print how well each method times the cap, with the cap near the cycle's true total."""
    methods = ("model", "run-rate", "pred_lin")
    caught = dict.fromkeys(methods, 0)
    false_alarms = dict.fromkeys(methods, 0)
    timing: dict[str, list[float]] = {name: [] for name in methods}
    reached = not_reached = 0
    for pattern in PATTERNS:
        for cycle_day in CYCLE_POINTS.values():
            for seed in SEEDS:
                result = outcome(pattern, seed, cycle_day)
                truth = result.true_crossing
                if pattern == "zero" or (truth is not None and truth <= result.now):
                    continue  # already over the cap: every method answers "now"
                reached += truth is not None
                not_reached += truth is None
                for name in methods:
                    predicted = result.crossings[name]
                    if truth is None:
                        false_alarms[name] += predicted is not None
                    elif predicted is not None:
                        caught[name] += 1
                        timing[name].append(abs((predicted - truth) / timedelta(hours=1)))
    print()
    print(
        f"Cap exhaustion, cap = true cycle total x U(0.7, 1.3): {reached} cases reach it "
        f"after now, {not_reached} do not"
    )
    header = f"{'method':<10} {'caught':>7} {'false alarms':>13} {'median |error| hours':>21}"
    print(header)
    print("-" * len(header))
    for name in methods:
        hours = statistics.median(timing[name]) if timing[name] else math.nan
        print(
            f"{name:<10} {caught[name] / max(reached, 1):7.0%} "
            f"{false_alarms[name] / max(not_reached, 1):13.0%} {hours:21.1f}"
        )


@dataclass(frozen=True, slots=True)
class RealSummary:
    """Scores of one group of real-series cases."""

    n: int
    model: float  # median APE
    run_rate: float
    pred_lin: float
    model_p90: float
    baseline_p90: float  # of the baseline with the lower median
    worse: float  # share of cases clearly worse than that case's better baseline
    coverage: float  # share of true totals inside the band

    @property
    def ratio(self) -> float:
        better = min(self.run_rate, self.pred_lin)
        return self.model / better if better > 0.0 else math.inf


def summarise(outcomes: Sequence[Outcome]) -> RealSummary:
    """Median and p90 APE, clearly-worse share and band coverage of `outcomes`."""
    model = [ape(o.projected, o.truth) for o in outcomes]
    run = [ape(o.run_rate, o.truth) for o in outcomes]
    line = [ape(o.predict_linear, o.truth) for o in outcomes]
    better = run if statistics.median(run) <= statistics.median(line) else line
    worse = sum(
        m > min(r, pl) + CLEARLY_WORSE_POINTS for m, r, pl in zip(model, run, line, strict=True)
    )
    inside = sum(o.lower <= o.truth <= o.upper for o in outcomes)
    return RealSummary(
        n=len(outcomes),
        model=statistics.median(model),
        run_rate=statistics.median(run),
        pred_lin=statistics.median(line),
        model_p90=percentile(model, 0.9),
        baseline_p90=percentile(better, 0.9),
        worse=worse / len(outcomes),
        coverage=inside / len(outcomes),
    )


def real_outcomes(parts: Sequence[str]) -> dict[str, dict[int, list[Outcome]]] | None:
    """Outcomes on the real series by part and cycle day; None when the data is absent."""
    path = data_file()
    if path is None:
        return None
    first_day, totals = load_series(path)
    return _by_part_and_day(real_cases(first_day, totals), parts)


def independent_outcomes() -> dict[str, dict[int, list[Outcome]]]:
    """Outcomes on the independent series (benchmarks/data), by station and cycle day."""
    stations = independent_series()
    cases = (
        real
        for name, first_day, totals in stations
        for real in independent_cases(name, first_day, totals)
    )
    return _by_part_and_day(cases, [name for name, _, _ in stations])


def _by_part_and_day(
    cases: Iterable[RealCase], parts: Sequence[str]
) -> dict[str, dict[int, list[Outcome]]]:
    results: dict[str, dict[int, list[Outcome]]] = {
        part: {day: [] for day in CYCLE_DAYS} for part in parts
    }
    for real in cases:
        if real.part in results:
            case = real.case
            cap = round(case.true_total * random.Random(f"cap:{case.now}").uniform(0.7, 1.3))
            results[real.part][case.cycle_day].append(score(case, cap))
    return results


_REAL_HEADER = (
    f"{'part':<16} {'day':>5} {'n':>5}  {'model':>6} {'run-rate':>8} {'pred_lin':>8} "
    f"{'ratio':>5}  {'p90':>6} {'base p90':>8}  {'worse':>5} {'band80':>6}"
)
_REAL_LEGEND = (
    f"(ratio: model / better baseline median; p90 of the model and of that baseline; worse: "
    f"model error > {CLEARLY_WORSE_POINTS:.0f} points above the case's better baseline)"
)


def _real_row(part: str, label: str, outcomes: Sequence[Outcome]) -> None:
    r = summarise(outcomes)
    print(
        f"{part:<16} {label:>5} {r.n:>5}  {r.model:5.1f}% {r.run_rate:7.1f}% "
        f"{r.pred_lin:7.1f}% {r.ratio:5.2f}  {r.model_p90:5.1f}% {r.baseline_p90:7.1f}%  "
        f"{r.worse:5.0%} {r.coverage:6.0%}"
    )


def _verdict(label: str, by_day: dict[int, list[Outcome]]) -> None:
    r = summarise([o for outcomes in by_day.values() for o in outcomes])
    lowest = min(summarise(outcomes).coverage for outcomes in by_day.values())
    met = r.ratio <= REAL_TARGET_RATIO and r.model_p90 <= r.baseline_p90
    print(
        f"{label}: ratio {r.ratio:.2f} (target <= {REAL_TARGET_RATIO}), "
        f"p90 {r.model_p90:.1f}% vs {r.baseline_p90:.1f}% (target: no worse): "
        f"{'PASS' if met else 'FAIL'}; {band_verdict(r.coverage, lowest)}"
    )


def _real_series_tables(parts: Sequence[str]) -> None:
    print()
    results = real_outcomes(parts)
    if results is None:
        print(
            "Real series: data not found beside the repository (../shared/data) nor in "
            f"${DATA_ENV}; skipped."
        )
        return
    print("Real series (daily page loads as Posts read), rolling origin: APE of the cycle total")
    print(_REAL_HEADER)
    print("-" * len(_REAL_HEADER))
    for part, by_day in results.items():
        for day, outcomes in by_day.items():
            _real_row(part, str(day), outcomes)
        _real_row(part, "all", [o for outcomes in by_day.values() for o in outcomes])
    print(_REAL_LEGEND)
    for part, by_day in results.items():
        _verdict(part, by_day)
    print("(the targets apply to the held-out part; the tuning part shows what was tuned on)")
    if "tuning" in results:
        _by_month_table(results["tuning"])


def by_start_month(by_day: dict[int, list[Outcome]]) -> dict[int, list[Outcome]]:
    """The outcomes of every cycle day, grouped by the calendar month their cycle starts in."""
    months: dict[int, list[Outcome]] = {}
    for outcomes in by_day.values():
        for o in outcomes:
            months.setdefault(o.cycle_start.month, []).append(o)
    return dict(sorted(months.items()))


def _by_month_table(by_day: dict[int, list[Outcome]]) -> None:
    """Where the model loses: the tuning part by the month its cycles start in, every cycle day."""
    print()
    print("Tuning part by the month the cycle starts in (every cycle day; held-out not split)")
    print(_REAL_HEADER)
    print("-" * len(_REAL_HEADER))
    for month, outcomes in by_start_month(by_day).items():
        _real_row("tuning", calendar.month_abbr[month], outcomes)


def _independent_tables() -> None:
    """The 20 independent series: one row per station, then per cycle day over all of them."""
    print()
    results = independent_outcomes()
    print(
        f"Independent real series ({len(results)} stations' daily entries as Posts read, "
        "never tuned on): APE of the cycle total"
    )
    print(_REAL_HEADER)
    print("-" * len(_REAL_HEADER))
    for station, by_day in results.items():
        _real_row(station, "all", [o for outcomes in by_day.values() for o in outcomes])
    pooled = {day: [o for by_day in results.values() for o in by_day[day]] for day in CYCLE_DAYS}
    for day, outcomes in pooled.items():
        _real_row("every station", str(day), outcomes)
    _real_row("every station", "all", [o for outcomes in pooled.values() for o in outcomes])
    print(_REAL_LEGEND)
    _verdict("independent, every station", pooled)
    print("(reported, not tuned on: the held-out targets measured on data the design never saw)")


def _a_year_before(case: Case) -> Case:
    """The case with KEEP_DAYS of history: the days before its first repeat its first week, so
    that the year-ago forecast (step 8) has every day it reads."""
    first = min(case.daily)
    week = [case.daily.get(first + k * _DAY) for k in range(7)]
    older = {
        day: value
        for k in range(1, forecast_module.KEEP_DAYS - len(case.daily) + 1)
        if (value := week[(first - k * _DAY - first).days % 7]) is not None
        for day in (first - k * _DAY,)
    }
    return dataclasses.replace(case, daily=older | case.daily)


def _timing(projects: Sequence[int] = (100, 1000)) -> None:
    """Time forecast_cycle, which runs once per project per poll, on 90-day generated histories
    and on the same with a kept year before them (KEEP_DAYS, step 8).

    The first poll fits every project; a poll 5 minutes later sees the same complete days and
    reuses the fits (exporter/forecast.py: `_fitted`, `_year_ago`), except where it crosses
    midnight or a whole day of the time left.
    """
    mixed = [p for p in PATTERNS if p not in ("zero", "new_project")]
    for history, widen in (("90 days", lambda case: case), ("a kept year", _a_year_before)):
        print()
        print(f"forecast_cycle cost (one call per project per poll; {history} of history each)")
        _time_polls(projects, mixed, widen)


def _time_polls(
    projects: Sequence[int], mixed: Sequence[str], widen: Callable[[Case], Case]
) -> None:
    for count in projects:
        cases = [
            widen(make_case(mixed[k % len(mixed)], 1000 + k, (3, 15, 25)[k % 3]))
            for k in range(count)
        ]
        later = [dataclasses.replace(case, now=case.now + POLL_INTERVAL) for case in cases]
        forecast_module._fitted.cache_clear()
        forecast_module._year_ago.cache_clear()
        reused = 0
        for label, polled in (("first poll", cases), ("5 min later", later)):
            hits = forecast_module._fitted.cache_info().hits
            started = time.perf_counter()
            for case in polled:
                forecast_case(case)
            elapsed = time.perf_counter() - started
            reused = forecast_module._fitted.cache_info().hits - hits
            print(
                f"{count:>5} projects, {label:<11}: {elapsed * 1000:8.0f} ms in all, "
                f"{elapsed / count * 1000:6.2f} ms per project"
            )
        year_ago = forecast_module._year_ago.cache_info()
        print(
            f"{'':>5}   fits reused {reused} of {count} times 5 min later"
            + (f"; year-ago fits kept: {year_ago.currsize}" if year_ago.currsize else "")
        )


def main(argv: Sequence[str] = ()) -> int:
    """`--tuning-only`: score the real series' tuning years alone, as when choosing a design.

    `--real-only`: the real series alone, no generated traces and no timing.
    """
    started = time.perf_counter()
    tuning_only = "--tuning-only" in argv
    parts = ("tuning",) if tuning_only else ("tuning", "held-out")
    if "--real-only" not in argv:
        _generated_tables()
    _real_series_tables(parts)
    if not tuning_only:
        _independent_tables()
    if "--real-only" not in argv:
        _timing()
    print(f"\nran in {time.perf_counter() - started:.1f} s")
    return 0


def _generated_tables() -> None:
    summary = _accuracy_table()
    model, baseline = summary.model, summary.baseline
    ratio = model / baseline if baseline > 0.0 else math.inf
    verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
    print()
    print(
        f"model / better baseline = {model:.1f}% / {baseline:.1f}% = {ratio:.2f} "
        f"(target <= {TARGET_RATIO}): {verdict}"
    )
    print(band_verdict(summary.coverage, summary.lowest_coverage))
    _exhaustion_table()
    print(f"({len(SEEDS)} seeds per row)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
