"""Forecast of a project's Posts to the end of its billing cycle, with a band and the cap time."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import statistics
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

__all__ = ["Forecast", "daily_baseline", "forecast_cycle"]

_DAY = timedelta(days=1)

# Defaults chosen from first principles, not fitted to the benchmark (docs/forecasting.md).
FIT_WINDOW_DAYS = 28  # four whole weeks: recent enough to follow growth, long enough to be robust
MIN_TREND_DAYS = 14  # fewer than two weeks cannot tell a trend from noise and the weekly rhythm
MIN_SEGMENT_DAYS = 3  # a level shift must hold for three whole days before it is believed
# Per-day damping of the trend, chosen per project by its own backtest (ties: the first):
# 0.98 lets a trend lose half its strength in about five weeks, 0.9 in about a week. Unlike the
# other defaults, 0.9 was picked on the real series' tuning years (docs/forecasting.md).
TREND_DAMPINGS = (0.98, 0.9)
WEEKDAY_PRIOR_WEEKS = 2.0  # weekday factors are shrunk toward 1 as if seen on 2 flat weeks
BACKTEST_ORIGINS = 21  # the band comes from the model's own errors from the last 21 days' origins
PRIOR_LOG_SD = 0.3  # error assumed before any backtest exists (about 30%) ...
PRIOR_WEIGHT = 1.0  # ... worth one backtest error
MIN_PACE_SHARE = 0.5  # today's pace replaces a lone first day once half of today has passed
# The smoothed partners (docs/forecasting.md, step 7): exponential smoothing of the log
# weekday-adjusted days, with a damped trend (ETS(A,Ad,N)) and without one (ETS(A,N,N), simple
# exponential smoothing), each with the grid point of the least squared one-step error, as a
# textbook ETS fit would choose it. The grids are generic, not fitted to a benchmark.
SMOOTHING_ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.5)  # level gain: memory of about 20 days to 2
SMOOTHING_BETAS = (0.01, 0.03, 0.1)  # trend gain, as a share of the level gain
SMOOTHING_DAMPINGS = (0.8, 0.9, 0.98)  # per day, of the smoothed trend: ETS's usual range
# (alpha, beta, damping) points; without a trend (beta 0) the damping has nothing to damp.
DAMPED_TREND_GRID = tuple(itertools.product(SMOOTHING_ALPHAS, SMOOTHING_BETAS, SMOOTHING_DAMPINGS))
LEVEL_GRID = tuple((alpha, 0.0, SMOOTHING_DAMPINGS[-1]) for alpha in SMOOTHING_ALPHAS)
PARTNER_GRIDS = (DAMPED_TREND_GRID, LEVEL_GRID)
SMOOTHING_CLIP_SDS = 5.0  # a one-step error past 5 robust SDs (a spike) counts as 5 SDs
MIN_SMOOTHING_DAYS = 14  # fewer known days leave the structured model alone
GUARD_FACTOR = 2.0  # a partner now twice as far off one before it as ever in the backtest: out
MAX_LOG_SD = 1.0  # bounds the lognormal mean correction on wild series
MAX_BAND_LOG_SD = 3.0  # bounds the band (x 46 at most) so absurd histories stay finite
MAX_LOG_POSTS = 50.0  # bounds a day's forecast (e^50 Posts) so runaway trends stay finite
# The year-ago forecast (docs/forecasting.md, step 8): the same days 52 weeks earlier (same
# weekday, one or two calendar days off), scaled by how the structured model's days (the last
# four weeks, or the days after a step) compare with theirs.
SEASON_DAYS = 364
RECENT_DAYS = 90  # the endpoint's window: steps 1-7 read these days only, however many are kept
# Days a forecast can use: a year and four weeks before the backtest's earliest origin, which
# lies up to 21 + 31 days back. Older days say nothing the forecast reads.
KEEP_DAYS = SEASON_DAYS + FIT_WINDOW_DAYS + BACKTEST_ORIGINS + 31 + 4
MIN_SEASON_SHARE = 0.75  # of the days the level is read from, the share known in both years
# Fits kept for reuse (docs/forecasting.md, "Cost"): one per project and horizon in whole days,
# about 2 kB each with its key. More projects than this still work, without the reuse.
FIT_CACHE_SIZE = 4096
Z_80 = 1.2815515655446004  # standard normal 90th percentile: a central 80% band
_MAD_TO_SD = 1.4826  # median absolute deviation to standard deviation for normal noise


@dataclass(frozen=True, slots=True)
class Forecast:
    """Projected Posts consumed at cycle end, its ~80% band, and when the cap is reached."""

    projected: float  # Posts consumed at cycle end (>= consumed)
    lower: float  # lower bound of an ~80% band (>= consumed)
    upper: float  # upper bound of the band
    exhaustion: datetime | None  # UTC instant the expected path reaches the cap, if in this cycle


@dataclass(frozen=True, slots=True)
class _Model:
    """Expected Posts per day: weekday factor x damped log-linear level anchored at `anchor`."""

    anchor: date  # last complete day the level was fitted on
    level: float  # log1p of the weekday-adjusted Posts per day at `anchor`
    slope: float  # per day on that log scale, after shrinkage
    noise: float  # robust standard deviation of daily residuals on that log scale
    factors: tuple[float, ...]  # by date.weekday(); mean 1
    damping: float = TREND_DAMPINGS[0]  # per day, of the trend
    since: date | None = None  # first day the level was read from (after a step, if one)

    def expected(self, day: date) -> float:
        """Mean Posts expected on `day` (lognormal mean, not median)."""
        steps = max((day - self.anchor).days, 0)
        # Damped trend: day h ahead moves by slope x (phi + phi^2 + ... + phi^h).
        phi = self.damping
        damped = phi * (1.0 - phi**steps) / (1.0 - phi)
        log_mean = self.level + self.slope * damped + self.noise * self.noise / 2.0
        return max(0.0, math.expm1(min(log_mean, MAX_LOG_POSTS))) * self.factors[day.weekday()]


def daily_baseline(daily: Mapping[date, int], today: date, days: int = 7) -> float | None:
    """Median Posts per day over the `days` complete UTC days before `today`; None without data.

    Days missing from `daily` are skipped, not counted as zero.
    """
    values = [max(0, v) for d, v in daily.items() if today - days * _DAY <= d < today]
    return float(statistics.median(values)) if values else None


def forecast_cycle(
    *,
    daily: Mapping[date, int],
    consumed: int,
    now: datetime,
    cycle_start: datetime,
    cycle_end: datetime,
    cap: int | None,
) -> Forecast:
    """Forecast Posts consumed by `cycle_end`: `consumed` plus the expected rest of the cycle.

    `daily` holds Posts per UTC day, history before `cycle_start` included, today's partial day
    under `now.date()`. A day absent from `daily` is unknown, never zero. `cap` may be any
    threshold in Posts (a budget divided by the price gives the budget's exhaustion time).
    """
    now = now.astimezone(UTC)
    cycle_start = cycle_start.astimezone(UTC)
    cycle_end = cycle_end.astimezone(UTC)
    today = now.date()
    elapsed_today = (now - datetime.combine(today, time(), UTC)) / _DAY
    partial = daily.get(today)
    horizon = max((cycle_end - now) / _DAY, 0.0)

    pace_known = partial is not None and elapsed_today >= MIN_PACE_SHARE
    oldest_read = today - RECENT_DAYS * _DAY
    recent = {d: v for d, v in daily.items() if d >= oldest_read}
    history = _usable_history(recent, today, pace_known)
    weights: tuple[float, ...] = (1.0,)
    partners: tuple[_Model, ...] = ()
    season: _YearAgo | None = None
    season_weight = 0.0
    if history:
        key, whole_days = _packed(history), max(round(horizon), 1)
        model, partners, weights, log_sd, span, _ = _fitted(key, whole_days)
        if len(recent) < len(daily):  # kept days older than the endpoint sends
            kept = _packed(daily, before=today)
            season, weight, blended_sd = _year_ago(kept, key, whole_days)
            if season is not None and season.covers(today, cycle_end):
                season_weight, log_sd = weight, blended_sd
        if span < horizon:
            # Backtested over fewer days than are left: a random-walk error grows with sqrt(days).
            log_sd *= math.sqrt(horizon / span)
    else:
        # No complete day to learn from: today's pace, or else the cycle's own run rate.
        if partial is not None and elapsed_today > 0.0:
            rate = max(partial, 0) / elapsed_today
        else:
            rate = max(consumed, 0) / max((now - cycle_start) / _DAY, 1.0 / 24.0)
        model = _Model(today, math.log1p(rate), 0.0, 0.0, (1.0,) * 7)
        log_sd = PRIOR_LOG_SD

    segments = _remaining_path(model.expected, now, cycle_end, partial, elapsed_today)
    if weights[0] < 1.0:
        paths = [segments] + [
            _remaining_path(partner.expected, now, cycle_end, partial, elapsed_today)
            for partner in partners
        ]
        segments = _weighted(paths, weights)
    if season is not None and season_weight > 0.0:
        ago = _remaining_path(season.expected, now, cycle_end, partial, elapsed_today)
        segments = _weighted([segments, ago], (1.0 - season_weight, season_weight))
    remaining = sum(amount for _, _, amount in segments)
    spread = math.exp(Z_80 * min(log_sd, MAX_BAND_LOG_SD))
    return Forecast(
        projected=consumed + remaining,
        lower=consumed + remaining / spread,
        upper=consumed + remaining * spread,
        exhaustion=_exhaustion(segments, consumed, cap, now, cycle_end),
    )


def _weighted(
    paths: Sequence[Sequence[tuple[datetime, datetime, float]]], weights: Sequence[float]
) -> list[tuple[datetime, datetime, float]]:
    """The weighted mean of forecasts of the same pieces of time."""
    return [
        (pieces[0][0], pieces[0][1], sum(w * p[2] for w, p in zip(weights, pieces, strict=True)))
        for pieces in zip(*paths, strict=True)
    ]


class _Kept:
    """The kept complete days as one array from `first` on (NaN: unknown): compact, for the
    fits kept in the cache."""

    __slots__ = ("first", "values")

    def __init__(self, packed: tuple[date, bytes]) -> None:
        self.first = packed[0]
        self.values = memoryview(packed[1]).cast("d")  # the key's bytes, not a copy

    def get(self, day: date) -> float | None:
        k = (day - self.first).days
        if 0 <= k < len(self.values) and not math.isnan(self.values[k]):
            return self.values[k]
        return None


@dataclass(frozen=True, slots=True)
class _YearAgo:
    """Step 8: each day as it was SEASON_DAYS before, times `ratio`: how the days the structured
    model read its level from compare with the same days a year before (a ratio of sums over
    the same weekdays, so a busy weekday counts as much as its Posts)."""

    days: _Kept
    ratio: float

    def covers(self, first: date, cycle_end: datetime) -> bool:
        """Whether every day from `first` until the cycle ends was seen a year before."""
        last = (cycle_end - timedelta(microseconds=1)).date()
        span = (last - first).days + 1
        return all(self.days.get(first + (k - SEASON_DAYS) * _DAY) is not None for k in range(span))

    def expected(self, day: date) -> float:
        return self.ratio * (self.days.get(day - SEASON_DAYS * _DAY) or 0.0)


@functools.lru_cache(maxsize=FIT_CACHE_SIZE)
def _year_ago(
    kept: tuple[date, bytes], packed: tuple[date, bytes], span: int
) -> tuple[_YearAgo | None, float, float]:
    """Step 8 for the kept days and the fit of `packed` (the days steps 1-7 read) over `span`:
    the year-ago forecast, its weight and the log-scale RMS error of the blend; None when the
    year before is not known well enough or nothing could be backtested."""
    model, _, _, log_sd, backtested, backtest = _fitted(packed, span)
    days = _Kept(kept)
    ratio = _season_ratio(days, model.since, model.anchor)
    if ratio is None or not backtest:
        return None, 0.0, log_sd
    season = _YearAgo(days, ratio)
    weight, blended_sd = _season_weight(season, packed, backtest, backtested, log_sd)
    return (season, weight, blended_sd) if weight > 0.0 else (None, 0.0, log_sd)


def _season_ratio(days: _Kept, since: date | None, anchor: date) -> float | None:
    """The days from `since` (the structured model's: after a step, only the days after it) to
    `anchor` over the same days a year before; None if fewer than MIN_SEASON_SHARE of them are
    known in both years, or the year before had no usage."""
    first = anchor - (FIT_WINDOW_DAYS - 1) * _DAY if since is None else since
    window = (anchor - first).days + 1
    pairs = [
        (this_year, year_before)
        for d in (first + k * _DAY for k in range(window))
        if (this_year := days.get(d)) is not None
        and (year_before := days.get(d - SEASON_DAYS * _DAY)) is not None
    ]
    before = sum(b for _, b in pairs)
    if len(pairs) < max(MIN_SEASON_SHARE * window, MIN_SEGMENT_DAYS) or before <= 0.0:
        return None
    return sum(a for a, _ in pairs) / before


def _season_weight(
    season: _YearAgo,
    packed: tuple[date, bytes],
    backtest: Sequence[tuple[date, date | None, int, float, float]],
    span: float,
    log_sd: float,
) -> tuple[float, float]:
    """The year-ago forecast's weight beside steps 1-7's, and the log-scale RMS error of the
    blend: both scored from the backtest's origins, over the days of `packed` each one saw
    (Bates and Granger, as in step 7; no guard, since a turn the recent past did not contain is
    what a year ago can show). Without a year-ago forecast at any origin: weight 0, `log_sd`
    unchanged."""
    history = _Kept(packed)
    cases: list[tuple[float, float, float]] = []
    for origin, since, days, actual, combined in backtest:
        ratio = _season_ratio(season.days, since, origin)
        seen = (origin + k * _DAY for k in range(1, days + 1))
        ago = [season.days.get(d - SEASON_DAYS * _DAY) for d in seen if history.get(d) is not None]
        if ratio is None or any(a is None for a in ago):
            continue
        cases.append((actual, combined, ratio * sum(a for a in ago if a is not None)))
    if not cases or not math.isfinite(span):
        return 0.0, log_sd
    prior = PRIOR_WEIGHT * PRIOR_LOG_SD**2
    inverse = [1.0 / (prior + sum(_log_error(c[0], c[k]) ** 2 for c in cases)) for k in (1, 2)]
    weight = inverse[1] / (inverse[0] + inverse[1])
    squares = prior + sum(_log_error(a, (1.0 - weight) * c + weight * y) ** 2 for a, c, y in cases)
    return weight, math.sqrt(squares / (len(cases) + PRIOR_WEIGHT))


def _packed(history: Mapping[date, float], before: date | None = None) -> tuple[date, bytes]:
    """`history` as a compact, hashable key: its first day and every day's value (NaN if absent).

    With `before`, only the days before it, a negative count as 0 (the kept days of step 8).
    """
    if before is not None:
        history = {d: v if v > 0.0 else 0.0 for d, v in history.items() if d < before}
    first = min(history)
    values = array("d", [math.nan]) * ((max(history) - first).days + 1)
    for day, value in history.items():
        values[(day - first).days] = value
    return first, values.tobytes()


@functools.lru_cache(maxsize=FIT_CACHE_SIZE)
def _fitted(
    packed: tuple[date, bytes], span: int
) -> tuple[
    _Model,
    tuple[_Model, ...],
    tuple[float, ...],
    float,
    float,
    tuple[tuple[date, date | None, int, float, float], ...],
]:
    """Everything the complete days and the horizon in whole days decide: computed once.

    The structured model, each smoothed partner's latest state, the weights, the log-scale RMS
    error of the combination, the span it was backtested over (infinite when there was no
    backtest), and each backtest origin with the first day the structured model read there, the
    span's days, their actual total and the combination's forecast: the polls of one day see
    the same complete days, so they reuse this.
    """
    first, values = packed
    known = array("d", values)
    history = {first + k * _DAY: v for k, v in enumerate(known) if not math.isnan(v)}
    raw, shrunk = _weekday_factors(history)
    model = _fit(history, raw, shrunk, max(history))
    partners = [s for grid in PARTNER_GRIDS if (s := _smooth(history, raw, shrunk, grid))]
    model, weights, log_sd, backtested, origins = _backtest(
        history, raw, shrunk, model, span, partners
    )
    return model, tuple(states[-1] for states in partners), weights, log_sd, backtested, origins


def _usable_history(daily: Mapping[date, int], today: date, pace_known: bool) -> dict[date, float]:
    """Complete days worth fitting: from the first day with usage, that day only if believable.

    Zeros before any usage are days the project (or its first App) did not exist yet. The first
    day of usage is often partial, as the App started during it: it is dropped when it falls
    below the median of the week after it, or, when it is the only day, once today's pace can
    stand in for it.
    """
    days = sorted((d, float(max(v, 0))) for d, v in daily.items() if d < today)
    while days and days[0][1] == 0.0:
        days.pop(0)
    if len(days) > 1:
        if days[0][1] < statistics.median(v for _, v in days[1:8]):
            days.pop(0)
    elif days and pace_known:
        days.pop(0)
    return dict(days)


def _weekday_factors(
    history: Mapping[date, float],
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Weekday factors (mean 1) as measured, and shrunk toward 1 for forecasting.

    Each weekday's factor is its median ratio to the centred 7-day mean. The measured factors
    deseasonalise the history, so the level is read without bias; the shrunk ones shape the
    forecast, so two weeks of data cannot impose a weekly rhythm that is only noise.
    """
    ratios: list[list[float]] = [[] for _ in range(7)]
    for day, value in history.items():
        week = [history.get(day + k * _DAY) for k in range(-3, 4)]
        known = [v for v in week if v is not None]
        if len(known) < 7:
            continue
        mean = sum(known) / 7.0
        if mean > 0.0:
            ratios[day.weekday()].append(value / mean)
    raw = [statistics.median(seen) if seen else 1.0 for seen in ratios]
    shrunk = [
        1.0 + (r - 1.0) * len(seen) / (len(seen) + WEEKDAY_PRIOR_WEEKS)
        for r, seen in zip(raw, ratios, strict=True)
    ]
    return _normalised(raw), _normalised(shrunk)


def _normalised(factors: Sequence[float]) -> tuple[float, ...]:
    # A weekday that never sees usage keeps a small factor so the level stays estimable.
    floored = [max(f, 0.05) for f in factors]
    mean = sum(floored) / len(floored)
    return tuple(f / mean for f in floored)


def _fit(
    history: Mapping[date, float],
    raw: Sequence[float],
    shrunk: Sequence[float],
    anchor: date,
) -> _Model:
    """Fit level and trend on the last FIT_WINDOW_DAYS days up to `anchor`."""
    start = anchor - (FIT_WINDOW_DAYS - 1) * _DAY
    points = sorted(
        ((d - anchor).days, math.log1p(v / raw[d.weekday()]))
        for d, v in history.items()
        if start <= d <= anchor
    )
    ts = [float(t) for t, _ in points]
    xs = [x for _, x in points]
    if len(xs) >= MIN_TREND_DAYS:
        split = _level_shift(ts, xs)
        ts, xs = ts[split:], xs[split:]
    slope = 0.0
    if len(xs) >= MIN_TREND_DAYS:
        slope = _theil_sen_slope(ts, xs)
        spread = _robust_sd([x - slope * t for t, x in zip(ts, xs, strict=True)])
        t_mean = sum(ts) / len(ts)
        standard_error = spread / math.sqrt(sum((t - t_mean) ** 2 for t in ts))
        # Positive-part James-Stein: keep the share 1 - 1/t^2 of the slope (t = slope / its
        # standard error), the plug-in estimate of the error-minimising share; none when |t| <= 1.
        if slope != 0.0:
            slope *= max(0.0, 1.0 - (standard_error / slope) ** 2)
    level = statistics.median(x - slope * t for t, x in zip(ts, xs, strict=True))
    residuals = [x - level - slope * t for t, x in zip(ts, xs, strict=True)]
    noise = min(_robust_sd(residuals), MAX_LOG_SD) if len(residuals) >= 3 else 0.0
    since = anchor + int(ts[0]) * _DAY
    return _Model(anchor, level, slope, noise, tuple(shrunk), since=since)


def _level_shift(ts: Sequence[float], xs: Sequence[float]) -> int:
    """Index where a level shift starts, or 0 when a straight line explains the data better.

    A one-break step (two flat levels and a break: 3 parameters) competes with a straight line
    (2 parameters); the step wins only when its BIC on absolute errors is lower.
    """
    n = len(xs)
    slope = _theil_sen_slope(ts, xs)
    intercept = statistics.median(x - slope * t for t, x in zip(ts, xs, strict=True))
    line_error = sum(abs(x - intercept - slope * t) for t, x in zip(ts, xs, strict=True))
    best_split, best_error = 0, math.inf
    for split in range(MIN_SEGMENT_DAYS, n - MIN_SEGMENT_DAYS + 1):
        error = _abs_dev(xs[:split]) + _abs_dev(xs[split:])
        if error < best_error:
            best_split, best_error = split, error
    tiny = 1e-9
    line_bic = n * math.log(line_error / n + tiny) + 2 * math.log(n)
    step_bic = n * math.log(best_error / n + tiny) + 3 * math.log(n)
    return best_split if step_bic < line_bic else 0


def _theil_sen_slope(ts: Sequence[float], xs: Sequence[float]) -> float:
    """Median of the pairwise slopes: a line that one wild day cannot tilt (distinct `ts`)."""
    slopes = [
        (xs[j] - xs[i]) / (ts[j] - ts[i]) for i in range(len(xs)) for j in range(i + 1, len(xs))
    ]
    return statistics.median(slopes)


def _abs_dev(xs: Sequence[float]) -> float:
    middle = statistics.median(xs)
    return sum(abs(x - middle) for x in xs)


def _robust_sd(xs: Sequence[float]) -> float:
    middle = statistics.median(xs)
    return _MAD_TO_SD * statistics.median(abs(x - middle) for x in xs)


def _smooth(
    history: Mapping[date, float],
    raw: Sequence[float],
    shrunk: Sequence[float],
    grid: Sequence[tuple[float, float, float]],
) -> list[_Model]:
    """A smoothed partner's state after each day from the first of `history`; [] if too short.

    Exponential smoothing of log(1 + Posts / weekday factor) with a damped trend, in
    error-correction form: each day moves the level by alpha x the one-step error and the trend
    by alpha x beta x it (beta 0: no trend, simple exponential smoothing). An unknown day moves
    nothing and lets the trend decay. The parameters are the point of `grid` (alpha, beta,
    damping) with the least sum of squared one-step errors over the whole history; errors are
    clipped at SMOOTHING_CLIP_SDS robust standard deviations of the day-to-day changes, so a
    spike moves the level as a large day, not as a new level. The state of day d forecasts from
    day d on, which the backtest reads from each origin (the parameters are chosen on the whole
    history).
    """
    first, anchor = min(history), max(history)
    days = [first + k * _DAY for k in range((anchor - first).days + 1)]
    xs = [math.log1p(history[d] / raw[d.weekday()]) if d in history else None for d in days]
    known = [x for x in xs if x is not None]
    if len(known) < MIN_SMOOTHING_DAYS:
        return []
    changes = _robust_sd([b - a for a, b in itertools.pairwise(known)]) / math.sqrt(2.0)
    clip = SMOOTHING_CLIP_SDS * changes if changes > 0.0 else math.inf
    start = statistics.median(known[:7])

    def run(
        alpha: float,
        beta: float,
        phi: float,
        path: list[tuple[date, float, float]] | None = None,
        errors: list[float] | None = None,
    ) -> float:
        """Sum of squared clipped one-step errors; each day's level and trend into `path`."""
        level, trend, squares = start, 0.0, 0.0
        for day, x in zip(days, xs, strict=True):
            level += phi * trend
            trend *= phi
            if x is not None:
                error = x - level
                if errors is not None:
                    errors.append(error)
                if error > clip:
                    error = clip
                elif error < -clip:
                    error = -clip
                squares += error * error
                level += alpha * error
                trend += alpha * beta * error
            if path is not None:
                path.append((day, level, trend))
        return squares

    alpha, beta, phi = min(grid, key=lambda point: run(*point))
    path: list[tuple[date, float, float]] = []
    errors: list[float] = []
    run(alpha, beta, phi, path, errors)
    noise = min(_robust_sd(errors), MAX_LOG_SD)
    factors = tuple(shrunk)
    return [_Model(day, level, trend, noise, factors, phi) for day, level, trend in path]


def _backtest(
    history: Mapping[date, float],
    raw: Sequence[float],
    shrunk: Sequence[float],
    model: _Model,
    span: int,
    partners: Sequence[Sequence[_Model]],
) -> tuple[
    _Model, tuple[float, ...], float, float, tuple[tuple[date, date | None, int, float, float], ...]
]:
    """The structured model with its damping, the weights, the log-scale RMS error of the result,
    the span it was measured over (infinite when nothing could be backtested), and per origin:
    the origin, the first day the structured model read there, the span, the actual total of the
    known days and the combination's forecast.

    From each of the last BACKTEST_ORIGINS days that leave a full span of history after them
    (`span` days, the horizon), the structured model is fitted on the days up to that
    origin and each smoothed partner forecasts from its state on that day; all totals for the
    span are compared with what happened. The structured model is scored with each of
    TREND_DAMPINGS and keeps the one with the smaller squared log error: the trend is damped
    hard where this project's past trends turned within the span, lightly where they carried on.
    The forecasts are then weighted by the inverse of their mean squared log errors (Bates and
    Granger): one that forecast this project's past twice as well weighs twice as much. A
    partner that now differs from the structured forecast, or from a partner before it, by more
    than GUARD_FACTOR times it ever did in the backtest (a spike, a step, a growth younger than
    the span: a situation the past did not contain) gets no weight, since the past says nothing
    about which is right; the structured model handles spikes and steps, and the damped trend
    follows a growth the level-only partner would lag. The weights are returned structured first,
    then one per partner. The combined forecast's errors give the band. A history too short for
    the full span is backtested on a shorter one, which the caller scales to the horizon. One
    pseudo-error of PRIOR_LOG_SD per method regularises every estimate.
    """
    anchor = model.anchor
    first = min(history)
    span = min(span, (anchor - first).days + 1 - MIN_SEGMENT_DAYS)
    # (origin, the structured model's first day, actual, its forecast per damping, each partner's)
    cases: list[tuple[date, date | None, float, tuple[float, ...], tuple[float, ...]]] = []
    for back in range(BACKTEST_ORIGINS if span >= 1 else 0):
        origin = anchor - (span + back) * _DAY
        train = {d: v for d, v in history.items() if d <= origin}
        if len(train) < MIN_SEGMENT_DAYS:
            break
        seen = [d for d in (origin + k * _DAY for k in range(1, span + 1)) if d in history]
        if 2 * len(seen) <= span:
            continue
        past = _fit(train, raw, shrunk, max(train))
        structured = tuple(
            sum(map(dataclasses.replace(past, damping=phi).expected, seen))
            for phi in TREND_DAMPINGS
        )
        others = tuple(sum(map(p[(origin - first).days].expected, seen)) for p in partners)
        cases.append((origin, past.since, sum(history[d] for d in seen), structured, others))
    best = min(
        range(len(TREND_DAMPINGS)),
        key=lambda j: sum(_log_error(a, m[j]) ** 2 for _, _, a, m, _ in cases),
    )
    model = dataclasses.replace(model, damping=TREND_DAMPINGS[best])
    scored = [(a, (m[best], *others)) for _, _, a, m, others in cases]
    prior = PRIOR_WEIGHT * PRIOR_LOG_SD**2
    ahead = [anchor + k * _DAY for k in range(1, max(span, 1) + 1)]
    # Each forecast's total for the span ahead of today: structured first, then the partners.
    totals = [sum(map(model.expected, ahead)), *(sum(map(p[-1].expected, ahead)) for p in partners)]
    inverse: list[float] = []
    for k in range(len(totals)):
        unlike_the_past = any(
            abs(_log_error(totals[k], totals[j]))
            > GUARD_FACTOR * max((abs(_log_error(f[k], f[j])) for _, f in scored), default=0.0)
            for j in range(k)
        )
        squares = prior + sum(_log_error(a, f[k]) ** 2 for a, f in scored)
        inverse.append(0.0 if unlike_the_past else 1.0 / squares)
    total = sum(inverse)
    weights = tuple(v / total for v in inverse)
    combined = [sum(w * x for w, x in zip(weights, f, strict=True)) for _, f in scored]
    squares = prior + sum(_log_error(a, c) ** 2 for (a, _), c in zip(scored, combined, strict=True))
    log_sd = math.sqrt(squares / (len(scored) + PRIOR_WEIGHT))
    origins = tuple(
        (case[0], case[1], span, a, c)
        for case, (a, _), c in zip(cases, scored, combined, strict=True)
    )
    return model, weights, log_sd, span if scored else math.inf, origins


def _log_error(actual: float, expected: float) -> float:
    return math.log((actual + 1.0) / (expected + 1.0))


def _remaining_path(
    expected_on: Callable[[date], float],
    now: datetime,
    cycle_end: datetime,
    partial: int | None,
    elapsed_today: float,
) -> list[tuple[datetime, datetime, float]]:
    """Expected Posts in each remaining piece of a UTC day until `cycle_end`, spread evenly."""
    segments: list[tuple[datetime, datetime, float]] = []
    start = now
    while start < cycle_end:
        day = start.date()
        end = min(datetime.combine(day, time(), UTC) + _DAY, cycle_end)
        expected = expected_on(day)
        if day == now.date() and partial is not None:
            # Today's own pace (partial / elapsed) weighs as much as the share of today elapsed.
            rate = max(partial, 0) + (1.0 - elapsed_today) * expected
        else:
            rate = expected
        segments.append((start, end, rate * ((end - start) / _DAY)))
        start = end
    return segments


def _exhaustion(
    segments: Sequence[tuple[datetime, datetime, float]],
    consumed: int,
    cap: int | None,
    now: datetime,
    cycle_end: datetime,
) -> datetime | None:
    """First instant the expected cumulative path reaches `cap` before `cycle_end`."""
    if cap is None or now >= cycle_end:
        return None
    if consumed >= cap:
        return now
    total = float(consumed)
    for start, end, amount in segments:
        if total + amount > cap:  # strictly: reaching the cap exactly at cycle end is no crossing
            return start + (end - start) * ((cap - total) / amount)
        total += amount
    return None
