"""Backtest core: replay history through the exporter's code, evaluate the rules, judge cycles."""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from exporter import backfill
from exporter.alert_eval import AlertRule, Firing, alert_metric_names, evaluate, prometheus_over
from exporter.collector import UsageCollector
from exporter.config import CapResetDayMeans, ProjectConfig
from exporter.errors import ExporterError
from exporter.forecast import KEEP_DAYS
from exporter.parse import UsageReport
from exporter.snapshot import (
    UNKNOWN_PROJECT_ID,
    ConfigStatus,
    KeptDays,
    PollStatus,
    ProjectState,
    Store,
    UsageSnapshot,
    build_usage,
)

DAY = 86400.0
LEAD_GOAL = 3 * DAY  # a page this long before its event counts as "paged ahead"
JOB = "x-usage-exporter"
INSTANCE = "backtest"

# The event each alert warns about; alerts not listed are reported but not judged.
EVENT_OF: Mapping[str, str] = {
    "XApiPostCapProjectedExhaustion": "cap",
    "XApiPostCapUsageHigh": "cap",
    "XApiUsageCapped": "cap",
    "XApiBudgetProjectedOverrun": "budget",
    "XApiSpendingLimitProjectedReach": "spending_limit",
    "XApiSpendingLimitNear": "spending_limit",
}
EVENTS = ("cap", "budget", "spending_limit")


class TraceError(ExporterError):
    """A --trace file is malformed, or too short; the message names the file and line (exit 2)."""


@dataclass(frozen=True, slots=True)
class History:
    """One project's daily history as the usage endpoint gave it, and when it was taken."""

    project: ProjectConfig
    report: UsageReport  # every day of the history, the newest possibly partial
    observed_until: datetime  # the newest day's value is its consumption up to this instant
    means: CapResetDayMeans = CapResetDayMeans.DAY_OF_MONTH
    post_read_usd: float = 0.005
    history_days: int = 90  # what one answer of the endpoint holds
    start: datetime | None = None  # replay from here (default: the first whole cycle)


@dataclass(frozen=True, slots=True)
class Point:
    """What the replay exported for a project at one step, as far as judging needs it."""

    at: float
    cycle_start: float
    cycle_end: float
    consumed: int
    spend: float
    cap: int | None


@dataclass(frozen=True, slots=True)
class Replayed:
    project: str
    project_id: str
    points: tuple[Point, ...]
    series: tuple[backfill.Series, ...]


@dataclass(frozen=True, slots=True)
class JudgedFiring:
    firing: Firing
    event: str | None  # what the alert warns about (EVENT_OF), None for other alerts
    lead_seconds: float | None  # event time - firing start; None when the event did not happen
    false_page: bool | None  # its event never came in this (complete) cycle; None: not judged


@dataclass(frozen=True, slots=True)
class CycleResult:
    project: str
    project_id: str
    start: datetime
    end: datetime
    complete: bool  # the replay covers the whole cycle
    posts: int  # consumed at the last replayed step of the cycle
    cap: int | None
    budget_usd: float | None
    spending_limit_usd: float | None
    reached: Mapping[str, datetime | None]  # event -> when it happened in this cycle
    firings: tuple[JudgedFiring, ...] = ()

    def target(self, event: str) -> float | None:
        """The event's target: Posts for the cap, USD for the budget and the spending limit."""
        return {
            "cap": self.cap,
            "budget": self.budget_usd,
            "spending_limit": self.spending_limit_usd,
        }[event]

    def first_lead(self, event: str) -> float | None:
        """Lead of the first page warning about `event` that began before it; None if none."""
        leads = [
            judged.lead_seconds
            for judged in self.firings
            if judged.event == event and judged.lead_seconds is not None
        ]
        return max(leads) if leads else None


@dataclass(frozen=True, slots=True)
class Backtest:
    step: float
    cycles: tuple[CycleResult, ...]
    unattributed: tuple[Firing, ...] = field(default=())  # firings without a replayed project


# --- Replay --------------------------------------------------------------------------------------


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def answer_at(history: History, at: datetime) -> UsageReport:
    """The usage answer the exporter would have received at `at`.

    Whole days before `at`'s day, at most history_days of them, and `at`'s own day as the part of
    it consumed so far (spread evenly: the history has day totals only).
    """
    today = at.date()
    oldest = today - timedelta(days=history.history_days - 1)
    newest = history.observed_until

    def upto(days: Mapping[date, int]) -> dict[date, int]:
        seen = {day: n for day, n in days.items() if oldest <= day < today}
        if today in days:
            whole = (newest - midnight(today)).total_seconds() if newest.date() == today else DAY
            share = min((at - midnight(today)).total_seconds() / max(whole, 1.0), 1.0)
            seen[today] = round(days[today] * share)
        return seen

    report = history.report
    return UsageReport(
        project_id=report.project_id,
        cap=report.cap,
        cap_reset_day=report.cap_reset_day,
        project_usage=None,  # the sum of the cycle's days, as seen at `at`
        daily=upto(report.daily),
        apps={app: upto(days) for app, days in report.apps.items()},
    )


def kept_at(history: History, at: datetime) -> KeptDays:
    """The days an exporter polling since the history began would hold at `at` (up to
    KEEP_DAYS complete days; with --history.file across its restarts too)."""
    today = at.date()
    oldest = today - timedelta(days=KEEP_DAYS)
    days = {d: n for d, n in history.report.daily.items() if oldest <= d < today}
    return KeptDays.of(history.report.project_id or UNKNOWN_PROJECT_ID, days)


def exposition_at(history: History, at: datetime) -> tuple[UsageCollector, UsageSnapshot]:
    """The collector serving /metrics at `at`, over the snapshot the poller would have built."""
    usage = build_usage(
        answer_at(history, at),
        now=at,
        means=history.means,
        post_read_usd=history.post_read_usd,
        kept=kept_at(history, at),
    )
    # The X API refuses reads once the cap is reached: the poller's usage_capped state.
    capped = usage.cap is not None and usage.consumed >= usage.cap
    status = PollStatus(success=True, last_attempt=at, last_success=at, usage_capped=capped)
    state = ProjectState(history.project, usage=usage, status=status)
    store = Store(ConfigStatus(300.0, True, at.timestamp()))
    store.put(state)
    return UsageCollector(store, clock=lambda: at), usage


Sample = tuple[str, tuple[tuple[str, str], ...], float]


def _replay_steps(
    history: History, times: Sequence[float], names: frozenset[str]
) -> list[tuple[Point, list[Sample]]]:
    out = []
    for at_seconds in times:
        at = datetime.fromtimestamp(at_seconds, UTC)
        collector, usage = exposition_at(history, at)
        samples = [
            (sample.name, tuple(sorted(sample.labels.items())), float(sample.value))
            for family in collector.collect()
            for sample in family.samples
            if sample.name in names
        ]
        point = Point(
            at_seconds,
            usage.cycle.start.timestamp(),
            usage.cycle.end.timestamp(),
            usage.consumed,
            usage.spend,
            usage.cap,
        )
        out.append((point, samples))
    return out


def replay_start(history: History) -> datetime:
    """The first billing cycle that lies wholly inside the history (its total is known)."""
    if history.start is not None:
        return history.start
    first = min(history.report.daily)
    at = midnight(first)
    usage = build_usage(
        answer_at(history, at), now=at, means=history.means, post_read_usd=history.post_read_usd
    )
    return at if usage.cycle.start == at else usage.cycle.end


def step_times(history: History, step: float) -> list[float]:
    start = replay_start(history).timestamp()
    end = history.observed_until.timestamp()
    count = max(math.ceil((end - start) / step), 0)
    return [start + k * step for k in range(count)]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def replay(
    histories: Sequence[History],
    step: float,
    names: Iterable[str],
    workers: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[Replayed]:
    """Every project's exposition at every step; the steps run in parallel worker processes."""
    wanted = frozenset(names)
    jobs: list[tuple[int, list[float]]] = []
    for index, history in enumerate(histories):
        times = step_times(history, step)
        chunk = max(int(DAY // step), 1)
        jobs.extend((index, times[k : k + chunk]) for k in range(0, len(times), chunk))
    count = workers if workers is not None else min(os.cpu_count() or 1, 8)
    results: list[list[tuple[Point, list[Sample]]]] = [[] for _ in histories]
    executor: Executor | None = None
    try:
        if count > 1 and len(jobs) > 1:
            executor = ProcessPoolExecutor(count, initializer=_ignore_sigint)
            futures = [
                executor.submit(_replay_steps, histories[i], times, wanted) for i, times in jobs
            ]
            outputs = (future.result() for future in futures)
        else:
            outputs = (_replay_steps(histories[i], times, wanted) for i, times in jobs)
        for done, ((index, _), output) in enumerate(zip(jobs, outputs, strict=True)):
            if progress is not None:
                progress(done, len(jobs), histories[index].project.name)
            results[index].extend(output)
        if progress is not None:
            progress(len(jobs), len(jobs), "")
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return [_assemble(history, steps) for history, steps in zip(histories, results, strict=True)]


def _assemble(history: History, steps: list[tuple[Point, list[Sample]]]) -> Replayed:
    base = {"job": JOB, "instance": INSTANCE}
    by_series: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = {}
    for point, samples in steps:
        for name, labels, value in samples:
            by_series.setdefault((name, labels), []).append((point.at, value))
    series = tuple(
        backfill.Series(name, {**dict(labels), **base}, tuple(samples))
        for (name, labels), samples in sorted(by_series.items())
    )
    return Replayed(
        history.project.name,
        history.report.project_id or "unknown",
        tuple(point for point, _ in steps),
        series,
    )


def merged_series(replays: Sequence[Replayed]) -> list[backfill.Series]:
    """All replayed series, with `up` of the exporter's target at every step (the replay assumes
    it was scraped). A series without a project label (the exporter's own, such as its config
    reload state) is one series across the projects, its samples merged."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], dict[float, float]] = {}
    for replayed in replays:
        for item in replayed.series:
            key = (item.name, tuple(sorted(item.labels.items())))
            samples.setdefault(key, {}).update(item.samples)
    up = {point.at: 1.0 for replayed in replays for point in replayed.points}
    samples[("up", (("instance", INSTANCE), ("job", JOB)))] = up
    return [
        backfill.Series(name, dict(labels), tuple(sorted(values.items())))
        for (name, labels), values in sorted(samples.items())
    ]


# --- Judging -------------------------------------------------------------------------------------


def judge(
    histories: Sequence[History], replays: Sequence[Replayed], fired: Sequence[Firing]
) -> tuple[list[CycleResult], list[Firing]]:
    """Per billing cycle: when cap, budget and limit were reached, and how each firing did."""
    results: list[CycleResult] = []
    claimed: set[int] = set()
    for history, replayed in zip(histories, replays, strict=True):
        cycles: dict[float, list[Point]] = {}
        for point in replayed.points:
            cycles.setdefault(point.cycle_start, []).append(point)
        limits = {
            "budget": history.project.budget_usd,
            "spending_limit": history.project.spending_limit_usd,
        }
        for points in cycles.values():
            first, last = points[0], points[-1]
            reached: dict[str, datetime | None] = {}
            for event in EVENTS:
                target = limits.get(event) if event != "cap" else first.cap
                reached[event] = None
                for point in points:
                    value = point.consumed if event == "cap" else point.spend
                    if target and value >= target:
                        reached[event] = datetime.fromtimestamp(point.at, UTC)
                        break
            complete = (
                last.at + (points[1].at - first.at if len(points) > 1 else 0) >= last.cycle_end
            )
            judged = []
            for index, firing in enumerate(fired):
                if firing.labels.get("project") != replayed.project:
                    continue
                if not first.cycle_start <= firing.start < first.cycle_end:
                    continue
                claimed.add(index)
                judged.append(_judge_firing(firing, reached, complete))
            results.append(
                CycleResult(
                    project=replayed.project,
                    project_id=replayed.project_id,
                    start=datetime.fromtimestamp(first.cycle_start, UTC),
                    end=datetime.fromtimestamp(first.cycle_end, UTC),
                    complete=complete,
                    posts=last.consumed,
                    cap=first.cap,
                    budget_usd=limits["budget"],
                    spending_limit_usd=limits["spending_limit"],
                    reached=reached,
                    firings=tuple(judged),
                )
            )
    others = [firing for index, firing in enumerate(fired) if index not in claimed]
    return results, others


def _judge_firing(
    firing: Firing, reached: Mapping[str, datetime | None], complete: bool
) -> JudgedFiring:
    event = EVENT_OF.get(firing.alert)
    if event is None:
        return JudgedFiring(firing, None, None, None)
    at = reached[event]
    if at is None:
        return JudgedFiring(firing, event, None, True if complete else None)
    return JudgedFiring(firing, event, at.timestamp() - firing.start, False)


def run(
    histories: Sequence[History],
    rules: Sequence[AlertRule],
    step: float,
    prometheus_url: str | None = None,
    workers: int | None = None,
    progress: Callable[[str, int, int, str], None] | None = None,
) -> Backtest:
    """Replay, evaluate the rules with Prometheus over the replay, judge every cycle."""

    def stage(name: str) -> Callable[[int, int, str], None] | None:
        if progress is None:
            return None
        return lambda done, total, item: progress(name, done, total, item)

    histories = [history for history in histories if step_times(history, step)]
    if not histories:
        raise TraceError("no billing cycle starts within the history: nothing to replay")
    replays = replay(histories, step, alert_metric_names(rules), workers, stage("replay"))
    times = [point.at for replayed in replays for point in replayed.points]
    # Every step from the first to the last replayed instant, also where no project has data,
    # so that an alert resolves one step after its series ends.
    grid = [min(times) + k * step for k in range(round((max(times) - min(times)) / step) + 1)]
    if prometheus_url is not None:
        fired = evaluate(prometheus_url, rules, grid, stage("evaluate"))
    else:
        series = merged_series(replays)
        if progress is not None:
            progress("tsdb", 0, 1, f"{sum(len(s.samples) for s in series)} samples")
        # Lookback just under a step: each evaluation sees that step's sample and no older one.
        with prometheus_over(series, step - 1) as url:
            fired = evaluate(url, rules, grid, stage("evaluate"))
    cycles, others = judge(histories, replays, fired)
    return Backtest(step, tuple(cycles), tuple(others))
