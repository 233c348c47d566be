"""The `report` command's content: one billing cycle per project, by App or by day, as table,
CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from exporter import billing
from exporter.config import CapResetDayMeans, Config, ProjectConfig
from exporter.parse import UsageReport
from exporter.snapshot import build_usage


class Which(StrEnum):
    CURRENT = "current"
    PREVIOUS = "previous"


class Format(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"


class By(StrEnum):
    """The breakdown under each project's totals."""

    APP = "app"
    DAY = "day"


@dataclass(frozen=True, slots=True)
class AppLine:
    app_id: str
    posts: int
    share: float
    spend_usd: float


@dataclass(frozen=True, slots=True)
class DayLine:
    day: date
    posts: int
    share: float  # of the cycle's days listed
    spend_usd: float


@dataclass(frozen=True, slots=True)
class ProjectLine:
    project: str
    project_id: str
    cycle: billing.Cycle
    complete: bool  # False when the daily history does not reach back to the cycle's start
    posts: int
    cap: int | None
    spend_usd: float
    projected_posts: float
    projected_spend_usd: float
    days_left: float
    budget_usd: float | None
    spending_limit_usd: float | None
    apps: tuple[AppLine, ...]
    days: tuple[DayLine, ...]  # the cycle's UTC days in the history, oldest first

    @property
    def utilization(self) -> float | None:
        return self.posts / self.cap if self.cap else None


def project_line(
    project: ProjectConfig, report: UsageReport, config: Config, now: datetime, which: Which
) -> ProjectLine:
    """What one usage answer says about the chosen cycle (pure)."""
    price = config.pricing.post_read_usd
    usage = build_usage(report, now=now, means=config.cap_reset_day_means, post_read_usd=price)
    cycle = usage.cycle
    if which is Which.PREVIOUS:
        # The previous cycle ended where this one began.
        day = billing.reset_day_of_month(report.cap_reset_day, config.cap_reset_day_means, now)
        cycle = billing.cycle_for(
            cycle.start - timedelta(microseconds=1), day, CapResetDayMeans.DAY_OF_MONTH
        )
    last_day = min(now.date(), cycle.end.date() - timedelta(days=1))
    app_posts = {
        app_id: billing.sum_in_cycle(days, cycle, last_day) for app_id, days in report.apps.items()
    }
    if which is Which.CURRENT:
        posts = usage.consumed
        projected = usage.forecast.projected
        days_left = max((cycle.end - now).total_seconds() / 86400, 0.0)
    else:
        posts = billing.sum_in_cycle(report.daily, cycle, last_day)
        projected = float(posts)
        days_left = 0.0
    first = min(report.daily, default=None)
    complete = which is Which.CURRENT and report.project_usage is not None
    complete = complete or (first is not None and first <= cycle.start.date())
    total_app_posts = sum(app_posts.values()) or 1
    apps = tuple(
        AppLine(app_id, count, count / total_app_posts, billing.spend_usd(count, price))
        for app_id, count in sorted(app_posts.items(), key=lambda item: (-item[1], item[0]))
    )
    day_posts = {
        day: count for day, count in report.daily.items() if cycle.start.date() <= day <= last_day
    }
    total_day_posts = sum(day_posts.values()) or 1
    days = tuple(
        DayLine(day, count, count / total_day_posts, billing.spend_usd(count, price))
        for day, count in sorted(day_posts.items())
    )
    return ProjectLine(
        project=project.name,
        project_id=usage.project_id,
        cycle=cycle,
        complete=complete,
        posts=posts,
        cap=report.cap,
        spend_usd=billing.spend_usd(posts, price),
        projected_posts=projected,
        projected_spend_usd=billing.spend_usd(
            billing.billable_projection(projected, posts, report.cap), price
        ),
        days_left=days_left,
        budget_usd=project.budget_usd,
        spending_limit_usd=project.spending_limit_usd,
        apps=apps,
        days=days,
    )


def render(lines: Sequence[ProjectLine], fmt: Format, by: By = By.APP) -> str:
    if fmt is Format.JSON:
        return json.dumps([_as_dict(line, by) for line in lines], indent=2) + "\n"
    if fmt is Format.CSV:
        return _csv(lines, by)
    return _table(lines, by)


def _breakdown(line: ProjectLine, by: By) -> list[tuple[str, int, float, float]]:
    """(App id or date, Posts, share, spend) rows under a project's totals."""
    if by is By.DAY:
        return [(d.day.isoformat(), d.posts, d.share, d.spend_usd) for d in line.days]
    return [(a.app_id, a.posts, a.share, a.spend_usd) for a in line.apps]


def _day(value: datetime) -> str:
    return value.date().isoformat()


def _as_dict(line: ProjectLine, by: By) -> dict[str, object]:
    key, name = ("days", "date") if by is By.DAY else ("apps", "app_id")
    breakdown = [
        {name: row, "posts": posts, "share": round(share, 6), "spend_usd": round(spend, 4)}
        for row, posts, share, spend in _breakdown(line, by)
    ]
    return {
        "project": line.project,
        "project_id": line.project_id,
        "cycle_start": _day(line.cycle.start),
        "cycle_end": _day(line.cycle.end),
        "complete": line.complete,
        "posts": line.posts,
        "cap": line.cap,
        "utilization": line.utilization,
        "spend_usd": round(line.spend_usd, 4),
        "projected_posts": round(line.projected_posts),
        "projected_spend_usd": round(line.projected_spend_usd, 4),
        "days_left": round(line.days_left, 2),
        "budget_usd": line.budget_usd,
        "spending_limit_usd": line.spending_limit_usd,
        key: breakdown,
    }


_CSV_COLUMNS = (
    "project",
    "project_id",
    "cycle_start",
    "cycle_end",
    "posts",
    "share",
    "spend_usd",
    "cap",
    "projected_posts",
    "projected_spend_usd",
    "days_left",
)


def _csv(lines: Sequence[ProjectLine], by: By) -> str:
    """One row per project (app_id or date empty) followed by one row per App or day."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    key = "date" if by is By.DAY else "app_id"
    writer.writerow([*_CSV_COLUMNS[:2], key, *_CSV_COLUMNS[2:]])
    for line in lines:
        common = [line.project, line.project_id]
        cycle = [_day(line.cycle.start), _day(line.cycle.end)]
        writer.writerow(
            [
                *common,
                "",
                *cycle,
                line.posts,
                1.0,
                f"{line.spend_usd:.4f}",
                "" if line.cap is None else line.cap,
                round(line.projected_posts),
                f"{line.projected_spend_usd:.4f}",
                f"{line.days_left:.2f}",
            ]
        )
        for name, posts, share, spend in _breakdown(line, by):
            writer.writerow(
                [
                    *common,
                    name,
                    *cycle,
                    posts,
                    f"{share:.6f}",
                    f"{spend:.4f}",
                    "",
                    "",
                    "",
                    "",
                ]
            )
    return out.getvalue()


def _table(lines: Sequence[ProjectLine], by: By) -> str:
    blocks = []
    for line in lines:
        cap = f"{line.cap:,}" if line.cap is not None else "unknown"
        used = f" ({line.utilization:.1%} of cap)" if line.utilization is not None else ""
        head = [
            f"{line.project} (project {line.project_id})",
            f"  cycle        {_day(line.cycle.start)} .. {_day(line.cycle.end)} (UTC)"
            + ("" if line.complete else "  INCOMPLETE: history starts after the cycle began"),
            f"  Posts        {line.posts:,}{used}, cap {cap}",
            f"  spend        ${line.spend_usd:,.2f} (estimated Post reads)"
            + _limits(line.budget_usd, line.spending_limit_usd),
            f"  projection   {line.projected_posts:,.0f} Posts, ${line.projected_spend_usd:,.2f}"
            + f", {line.days_left:.1f} days left",
        ]
        breakdown = _breakdown(line, by)
        rows = [("Day (UTC)" if by is By.DAY else "App", "Posts", "Share", "Spend")] + [
            (name, f"{posts:,}", f"{share:.1%}", f"${spend:,.2f}")
            for name, posts, share, spend in breakdown
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        table = [
            "  "
            + "  ".join(
                cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                for i, cell in enumerate(row)
            ).rstrip()
            for row in rows
        ]
        blocks.append("\n".join(head + (["", *table] if breakdown else [])))
    return "\n\n".join(blocks) + "\n"


def _limits(budget: float | None, limit: float | None) -> str:
    parts = []
    if budget is not None:
        parts.append(f"budget ${budget:,.2f}")
    if limit is not None:
        parts.append(f"spending limit ${limit:,.2f}")
    return f"; {', '.join(parts)}" if parts else ""
