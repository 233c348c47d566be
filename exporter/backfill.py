"""The `backfill` command's content: daily history as OpenMetrics for promtool's block builder."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from exporter import billing
from exporter.config import CapResetDayMeans, Config
from exporter.parse import UsageReport
from exporter.snapshot import UNKNOWN_PROJECT_ID

DAY = 86400


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    labels: Mapping[str, str]
    samples: tuple[tuple[float, float], ...]  # (epoch seconds, value), ascending


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ProjectBackfill:
    series: list[Series]
    # Why the cycle totals start later than the daily series, for the operator; None if they don't.
    note: str | None


def project_series(
    name: str,
    report: UsageReport,
    config: Config,
    now: datetime,
    step: int,
    base: Mapping[str, str],
) -> ProjectBackfill:
    """Series for every complete UTC day before today.

    Within a day the day's total is spread linearly over `step`-second samples (the API gives
    day totals only); the last sample of each day, at 23:59:59, holds the exact total, whether
    or not `step` divides a day. The per-day series cover the whole history; the cycle totals
    start with the first cycle that began inside it (an earlier cycle's running total is unknown).
    """
    days = sorted(day for day in report.daily if day < now.date())
    if not days:
        return ProjectBackfill([], None)
    first = days[0]
    reset_day = billing.reset_day_of_month(report.cap_reset_day, config.cap_reset_day_means, now)
    price = config.pricing.post_read_usd
    project = {**base, "project": name, "project_id": report.project_id or UNKNOWN_PROJECT_ID}
    offsets = [min(k * step, DAY) for k in range(1, math.ceil(DAY / step) + 1)]
    cycles = {
        day: billing.cycle_for(_midnight(day), reset_day, CapResetDayMeans.DAY_OF_MONTH)
        for day in days
    }

    def collect(
        daily: Mapping[date, int],
    ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        today_samples: list[tuple[float, float]] = []
        cycle_samples: list[tuple[float, float]] = []
        for day in days:
            cycle = cycles[day]
            known = cycle.start.date() >= first
            before = billing.sum_in_cycle(daily, cycle, day - timedelta(days=1)) if known else 0
            total = daily.get(day, 0)
            start = _midnight(day).timestamp()
            for offset in offsets:
                at = start + offset - 1
                value = round(total * offset / DAY)
                today_samples.append((at, value))
                if known:
                    cycle_samples.append((at, before + value))
        return today_samples, cycle_samples

    today, cycle_total = collect(report.daily)
    partial = [day for day in days if cycles[day].start.date() < first]
    note = None
    if partial:
        note = (
            f"project {name}: the cycle totals (xapi_project_posts_consumed, _spend_usd, "
            f"_cap_utilization_ratio, xapi_app_posts_consumed) leave out {partial[0]} .. "
            f"{partial[-1]}: that cycle began on {cycles[partial[0]].start.date()}, before the "
            f"history's first day; the per-day series include those days"
        )
    series = [
        Series("xapi_project_posts_consumed_today", project, tuple(today)),
        Series("xapi_project_posts_consumed", project, tuple(cycle_total)),
        Series("xapi_project_spend_usd", project, tuple((t, v * price) for t, v in cycle_total)),
        Series("xapi_project_pricing_post_read_usd", project, tuple((t, price) for t, _ in today)),
        Series("xapi_project_info", project, tuple((t, 1.0) for t, _ in today)),
    ]
    if report.cap:
        cap = report.cap
        series.append(Series("xapi_project_cap_posts", project, tuple((t, cap) for t, _ in today)))
        series.append(
            Series(
                "xapi_project_cap_utilization_ratio",
                project,
                tuple((t, v / cap) for t, v in cycle_total),
            )
        )
    for app_id, daily in sorted(report.apps.items()):
        app_today, app_cycle = collect(daily)
        labels = {**project, "app_id": app_id}
        series.append(Series("xapi_app_posts_consumed_today", labels, tuple(app_today)))
        series.append(Series("xapi_app_posts_consumed", labels, tuple(app_cycle)))
    return ProjectBackfill([item for item in series if item.samples], note)


def openmetrics(series: list[Series]) -> Iterator[str]:
    """OpenMetrics text: families contiguous, samples ascending, then # EOF."""
    by_name: dict[str, list[Series]] = {}
    for item in series:
        by_name.setdefault(item.name, []).append(item)
    for name in sorted(by_name):
        yield f"# HELP {name} Backfilled by x-usage-exporter from the daily usage history.\n"
        yield f"# TYPE {name} gauge\n"
        for item in by_name[name]:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(item.labels.items()))
            for at, value in item.samples:
                yield f"{name}{{{labels}}} {value!r} {at:.0f}\n"
    yield "# EOF\n"
