"""The `backtest` command: replay history through the exporter's code, judge the alerts' pages."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from exporter import backfill, billing, simulator
from exporter.alert_eval import AlertRule, Firing, alert_metric_names, evaluate, prometheus_over
from exporter.collector import UsageCollector
from exporter.config import CapResetDayMeans, Config, ProjectConfig, TokenSource, parse_duration
from exporter.errors import ExporterError
from exporter.parse import UsageReport
from exporter.simulator import SimProject
from exporter.snapshot import (
    ConfigStatus,
    PollStatus,
    ProjectState,
    Store,
    UsageSnapshot,
    build_usage,
)

DAY = 86400.0
MAX_TRACE_BYTES = 4 * 1024 * 1024
MAX_TRACE_DAYS = 731
MAX_APP_ID_LENGTH = 64
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
        """The event's threshold in Posts (money divided by the price)."""
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


# --- Trace files ---------------------------------------------------------------------------------


def read_trace(path: Path) -> tuple[dict[date, int], dict[str, dict[date, int]]]:
    """Posts per UTC day, and per App when the trace has an app_id column.

    Format: CSV rows `date,posts[,app_id]` (`2026-01-31,41250`), an optional header row naming
    those columns, `#` comment lines. One row per day, or per day and App.
    """
    try:
        if path.stat().st_size > MAX_TRACE_BYTES:
            raise TraceError(f"{path}: larger than {MAX_TRACE_BYTES // 1024 // 1024} MiB")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not UTF-8 text") from None
    daily: dict[date, int] = {}
    apps: dict[str, dict[date, int]] = {}
    without_app: set[date] = set()
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        where = f"{path}:{number}"
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        cells = [cell.strip() for cell in row]
        if number == 1 and cells[0].lower() == "date":
            if cells[1:] not in (["posts"], ["posts", "app_id"]):
                raise TraceError(f"{where}: header must be date,posts or date,posts,app_id")
            continue
        if len(cells) not in (2, 3):
            raise TraceError(f"{where}: expected date,posts[,app_id], got {len(cells)} fields")
        try:
            day = date.fromisoformat(cells[0])
        except ValueError:
            raise TraceError(f"{where}: date {cells[0]!r} is not YYYY-MM-DD") from None
        if not cells[1].isdigit():
            raise TraceError(f"{where}: posts {cells[1]!r} is not a whole number >= 0")
        posts = int(cells[1])
        app = cells[2] if len(cells) == 3 else ""
        if len(app) > MAX_APP_ID_LENGTH:
            raise TraceError(f"{where}: app_id longer than {MAX_APP_ID_LENGTH} characters")
        if app:
            if day in apps.setdefault(app, {}) or day in without_app:
                raise TraceError(f"{where}: second row for {day} and app {app}")
            apps[app][day] = posts
        else:
            if day in daily:
                raise TraceError(f"{where}: second row for {day}")
            without_app.add(day)
        daily[day] = daily.get(day, 0) + posts
        if len(daily) > MAX_TRACE_DAYS:
            raise TraceError(f"{where}: more than {MAX_TRACE_DAYS} days")
    if not daily:
        raise TraceError(f"{path}: no rows of date,posts")
    return daily, apps


# --- Replay --------------------------------------------------------------------------------------


def _midnight(day: date) -> datetime:
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
            whole = (newest - _midnight(today)).total_seconds() if newest.date() == today else DAY
            share = min((at - _midnight(today)).total_seconds() / max(whole, 1.0), 1.0)
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


def exposition_at(history: History, at: datetime) -> tuple[UsageCollector, UsageSnapshot]:
    """The collector serving /metrics at `at`, over the snapshot the poller would have built."""
    usage = build_usage(
        answer_at(history, at), now=at, means=history.means, post_read_usd=history.post_read_usd
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
    at = _midnight(first)
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


# --- Output --------------------------------------------------------------------------------------


def _iso(at: datetime | float | None) -> str | None:
    if at is None:
        return None
    if isinstance(at, float | int):
        at = datetime.fromtimestamp(at, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def summary(result: Backtest) -> dict[str, Any]:
    """Per event: cycles that reached it, how many were paged >= 3 days ahead, median lead."""
    out: dict[str, Any] = {"cycles": len(result.cycles)}
    for event in EVENTS:
        crossed = [c for c in result.cycles if c.reached[event] is not None]
        leads = [c.first_lead(event) for c in crossed]
        known = [lead for lead in leads if lead is not None]
        out[event] = {
            "reached": len(crossed),
            "paged_3d_ahead": sum(1 for lead in known if lead >= LEAD_GOAL),
            "paged_before": sum(1 for lead in known if lead > 0),
            "median_lead_seconds": statistics.median(known) if known else None,
        }
    out["false_pages"] = sum(1 for c in result.cycles for j in c.firings if j.false_page)
    return out


def to_json(result: Backtest) -> str:
    cycles = []
    for cycle in result.cycles:
        cycles.append(
            {
                "project": cycle.project,
                "project_id": cycle.project_id,
                "start": _iso(cycle.start),
                "end": _iso(cycle.end),
                "complete": cycle.complete,
                "posts": cycle.posts,
                "cap": cycle.cap,
                "budget_usd": cycle.budget_usd,
                "spending_limit_usd": cycle.spending_limit_usd,
                "cap_reached_at": _iso(cycle.reached["cap"]),
                "budget_reached_at": _iso(cycle.reached["budget"]),
                "spending_limit_reached_at": _iso(cycle.reached["spending_limit"]),
                "firings": [_firing_json(judged) for judged in cycle.firings],
            }
        )
    document = {
        "step_seconds": result.step,
        "cycles": cycles,
        "other_firings": [
            _firing_json(JudgedFiring(f, None, None, None)) for f in result.unattributed
        ],
        "summary": summary(result),
    }
    return json.dumps(document, indent=2) + "\n"


def _firing_json(judged: JudgedFiring) -> dict[str, Any]:
    firing = judged.firing
    labels = {k: v for k, v in firing.labels.items() if k != "alertname"}
    return {
        "alert": firing.alert,
        "severity": labels.get("severity"),
        "labels": labels,
        "start": _iso(firing.start),
        "end": _iso(firing.end),
        "event": judged.event,
        "lead_seconds": judged.lead_seconds,
        "false_page": judged.false_page,
    }


def _days(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / DAY:+.1f}d"


def _short(at: datetime | float | None) -> str:
    text = _iso(at)
    return "-" if text is None else text[:16].replace("T", " ")


def to_table(result: Backtest) -> str:
    lines = []
    for cycle in result.cycles:
        state = "" if cycle.complete else " (in progress)"
        cap = f"{cycle.posts:,}/{cycle.cap:,} Posts" if cycle.cap else f"{cycle.posts:,} Posts"
        lines.append(
            f"{cycle.project}  cycle {cycle.start:%Y-%m-%d} to {cycle.end:%Y-%m-%d}{state}  {cap}"
        )
        for event in EVENTS:
            target = cycle.target(event)
            if target is None:
                continue
            at = cycle.reached[event]
            lines.append(f"  {event:<15} {'reached ' + _short(at) if at else 'not reached'}")
        for judged in cycle.firings:
            firing = judged.firing
            verdict = "FALSE PAGE" if judged.false_page else ""
            if judged.lead_seconds is not None:
                verdict = f"lead {_days(judged.lead_seconds)} before {judged.event}"
            lines.append(
                f"  {firing.alert:<32} {firing.labels.get('severity', ''):<8} "
                f"{_short(firing.start)} .. {_short(firing.end) if firing.end else 'still firing'}"
                f"  {verdict}".rstrip()
            )
        if not cycle.firings:
            lines.append("  no alert fired")
        lines.append("")
    for firing in result.unattributed:
        lines.append(f"other: {firing.alert} {_short(firing.start)} .. {_short(firing.end)}")
    totals = summary(result)
    lines.append(f"{totals['cycles']} cycle(s), {totals['false_pages']} false page(s)")
    for event in EVENTS:
        item = totals[event]
        if item["reached"]:
            lines.append(
                f"{event}: reached in {item['reached']} cycle(s), paged >= 3 days ahead in "
                f"{item['paged_3d_ahead']}, median lead {_days(item['median_lead_seconds'])}"
            )
    return "\n".join(lines) + "\n"


def trace_history(
    daily: dict[date, int],
    apps: dict[str, dict[date, int]],
    *,
    cap: int | None,
    reset_day: int,
    budget_usd: float | None,
    spending_limit_usd: float | None,
    post_read_usd: float,
    name: str = "trace",
) -> History:
    """A hand-written trace as a history: its last day complete, its cap and prices as given."""
    last = max(daily)
    report = UsageReport(
        project_id=name,
        cap=cap,
        cap_reset_day=reset_day,
        project_usage=None,
        daily=daily,
        apps=apps,
    )
    project = ProjectConfig(name, TokenSource(env="X_BEARER_TOKEN"), budget_usd, spending_limit_usd)
    return History(
        project,
        report,
        observed_until=_midnight(last + timedelta(days=1)),
        post_read_usd=post_read_usd,
        history_days=90,
    )


# --- Sources -------------------------------------------------------------------------------------

# The demo's production project with a tighter cap and money limits than the live demo, so that
# its 90 days of history hold crossings to judge (and a narrow miss).
DEMO_CAP = 2_000_000
DEMO_BUDGET_USD = 9_000.0
DEMO_SPENDING_LIMIT_USD = 12_000.0
TRACE_ONLY_FLAGS = ("cap", "budget_usd", "spending_limit_usd")


def check_flags(args: Any) -> str | None:
    """The first problem with the backtest flags, as one line; None when they are usable."""
    sources = [bool(args.trace), bool(args.demo), bool(args.config_file)]
    if sum(sources) > 1:
        return "--trace, --demo and --config.file exclude each other"
    if not args.trace and any(getattr(args, flag) is not None for flag in TRACE_ONLY_FLAGS):
        return "--cap, --budget-usd and --spending-limit-usd go with --trace"
    try:
        step = parse_duration(args.step)
    except ValueError as exc:
        return f"--step: {exc}"
    if not 60 <= step <= DAY or DAY % step:
        return "--step: must be between 1m and 1d and divide a day (replays start at midnight)"
    if args.cap is not None and args.cap <= 0:
        return "--cap: must be a whole number > 0"
    if not 1 <= args.reset_day <= 31:
        return "--reset-day: must be a day of the month, 1 to 31"
    for flag in ("budget_usd", "spending_limit_usd", "post_read_usd"):
        value = getattr(args, flag)
        if value is not None and not (math.isfinite(value) and value > 0):
            return f"--{flag.replace('_', '-')}: must be a number > 0"
    return None


def shipped_rules() -> list[Path]:
    alerts = Path(__file__).resolve().parent.parent / "alerts"
    return [alerts / "rules.yml", alerts / "thresholds.yml"]


def trace_history_from_flags(args: Any) -> History:
    path = Path(args.trace)
    daily, apps = read_trace(path)
    return trace_history(
        daily,
        apps,
        cap=args.cap,
        reset_day=args.reset_day,
        budget_usd=args.budget_usd,
        spending_limit_usd=args.spending_limit_usd,
        post_read_usd=args.post_read_usd,
        name=path.stem or "trace",
    )


def answer_histories(
    config: Config, fetched: Sequence[tuple[ProjectConfig, UsageReport]], now: datetime
) -> list[History]:
    """One history per configured project, from its usage answer taken at `now`.

    Past cycles are replayed with today's cap and prices: the answer holds no older ones.
    """
    histories = []
    for project, report in fetched:
        if not report.daily:
            continue
        # Replayed instants lie in the past: the reset day is pinned to a day of the month.
        reset_day = billing.reset_day_of_month(
            report.cap_reset_day, config.cap_reset_day_means, now
        )
        histories.append(
            History(
                project,
                replace(report, cap_reset_day=reset_day),
                observed_until=now,
                post_read_usd=config.pricing.post_read_usd,
                history_days=config.history_days,
            )
        )
    return histories


def demo_projects(now: datetime) -> list[SimProject]:
    return [replace(project, cap=DEMO_CAP) for project in simulator.demo_projects(now)]


def demo_config(config: Config) -> Config:
    first, *others = config.projects
    production = replace(
        first, budget_usd=DEMO_BUDGET_USD, spending_limit_usd=DEMO_SPENDING_LIMIT_USD
    )
    return replace(config, projects=(production, *others))


def stderr_progress(stage: str, done: int, total: int, item: str) -> None:
    """A line per tenth of each stage on stderr (stdout carries the result)."""
    if done == total or done % max(total // 10, 1) == 0:
        sys.stderr.write(f"backtest: {stage} {done}/{total} {item}".rstrip() + "\n")
        sys.stderr.flush()
