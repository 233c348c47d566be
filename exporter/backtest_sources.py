"""Where a backtest's histories come from: trace files, flags, configured projects, the demo."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from exporter import billing, simulator
from exporter.backtest import DAY, History, TraceError, midnight
from exporter.config import Config, ProjectConfig, TokenSource, parse_duration
from exporter.parse import UsageReport
from exporter.simulator import SimProject

MAX_TRACE_BYTES = 4 * 1024 * 1024
MAX_TRACE_DAYS = 731
MAX_APP_ID_LENGTH = 64


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
        observed_until=midnight(last + timedelta(days=1)),
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


def demo_with_crossings(now: datetime) -> list[SimProject]:
    """The simulator's demo projects with the backtest demo's cap."""
    return [replace(project, cap=DEMO_CAP) for project in simulator.demo_projects(now)]


def demo_targets(config: Config) -> Config:
    """The demo config with the backtest demo's budget and spending limit on production."""
    first, *others = config.projects
    production = replace(
        first, budget_usd=DEMO_BUDGET_USD, spending_limit_usd=DEMO_SPENDING_LIMIT_USD
    )
    return replace(config, projects=(production, *others))
