"""The landing page: each project's billing cycle at a glance, as HTML with inline SVG (pure)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from html import escape

from exporter import __version__, billing
from exporter.snapshot import ProjectState, UsageSnapshot

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#15202b;color:#fff;padding:12px 20px}header a{color:#9ad0ff}
main{max-width:980px;margin:0 auto;padding:12px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;margin:12px 0;padding:14px 16px}
h1{font-size:20px;margin:0}h2{font-size:18px;margin:0 0 4px}
.meta{color:#5b6575;font-size:13px}.bad{color:#b3261e;font-weight:600}.ok{color:#1e7b34}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:12px}
table{border-collapse:collapse;width:100%;font-size:14px}
td,th{text-align:right;padding:3px 6px;border-bottom:1px solid #eceff3}
td:first-child,th:first-child{text-align:left}
svg{width:100%;height:auto;display:block}.k{font-size:13px;color:#5b6575}
@media (max-width:600px){svg.daily{font-size:16px}}
"""


def render(
    states: Mapping[str, ProjectState],
    now: datetime,
    metrics_path: str,
    *,
    overdue: frozenset[str],
) -> str:
    """`overdue`: the projects whose poll has not ended by its deadline (Store.overdue)."""
    sections = [_project(state, now, name in overdue) for name, state in sorted(states.items())]
    body = "".join(sections) or "<section><p>No project is configured.</p></section>"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>x-usage-exporter</title><style>{_STYLE}</style></head><body>"
        f'<header><h1>x-usage-exporter</h1><span class="meta">version {__version__} · '
        f'<a href="{escape(metrics_path)}">metrics</a> · <a href="/-/healthy">health</a> · '
        f'<a href="/-/ready">readiness</a></span></header><main>{body}'
        '<p class="meta">Spend is the estimated Post-read spend (Posts consumed × price); '
        "users, DMs and writes are billed too and are not in it.</p></main></body></html>"
    )


def _project(state: ProjectState, now: datetime, overdue: bool) -> str:
    name = escape(state.project.name)
    status = _status_line(state, now, overdue)
    usage = state.usage
    if usage is None:
        return f"<section><h2>{name}</h2>{status}<p>No usage data yet.</p></section>"
    if now >= usage.cycle.end:
        return (
            f"<section><h2>{name}</h2>{status}<p>The billing cycle that the last answer "
            "described has ended; waiting for the first answer of the new cycle.</p></section>"
        )
    return (
        f'<section><h2>{name} <span class="meta">project {escape(usage.project_id)}</span></h2>'
        f"{status}{_cycle_line(usage, now)}"
        f'<div class="grid"><div>{_cap_bar(usage)}</div><div>{_spend_bar(state, usage)}</div></div>'
        f"{_history(usage, now)}{_apps(usage)}</section>"
    )


def _status_line(state: ProjectState, now: datetime, overdue: bool) -> str:
    status = state.status
    fresh = "never"
    if status.last_success is not None:
        fresh = f"{_ago(now - status.last_success)} ago"
    if overdue:
        # As on /metrics: a poll past its deadline has failed, as far as anyone waiting can tell.
        return (
            '<p class="meta"><span class="bad">Poll failed (timeout)</span>: no poll has ended '
            f"by its deadline · last good data {fresh}</p>"
        )
    if status.success is None:
        return '<p class="meta">First poll running.</p>'
    if status.success:
        return f'<p class="meta"><span class="ok">Last poll OK</span> · data from {fresh}</p>'
    # The same blocked states as the metrics: a cap flag ends with the cycle it was seen in.
    blocked = ""
    if status.capped_at(now):
        blocked = " · the X API refuses reads: monthly cap reached"
    elif status.credits_depleted:
        blocked = " · the X API refuses every billed request: prepaid credits used up"
    return (
        f'<p class="meta"><span class="bad">Last poll failed ({escape(status.error_reason or "")})'
        f"</span>: {escape(status.error_message or '')} · last good data {fresh}{blocked}</p>"
    )


def _cycle_line(usage: UsageSnapshot, now: datetime) -> str:
    left = usage.cycle.end - now
    exhaustion = usage.forecast.exhaustion
    when = (
        f'<span class="bad">cap reached by {exhaustion:%b %d %H:%M} UTC</span>'
        if exhaustion is not None
        else "cap not reached this cycle"
    )
    return (
        f'<p class="meta">Cycle {usage.cycle.start:%b %d} – {usage.cycle.end:%b %d} '
        f"(UTC) · {_ago(left)} left · forecast: {when}</p>"
    )


def _ago(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    if seconds >= 86400:
        return f"{seconds // 86400}d {seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 60}m {seconds % 60}s"


def _bar(
    title: str, value: float, projected: float, limit: float, marks: list[tuple[float, str]]
) -> str:
    """A horizontal bar: value, projection and labelled marks on a 0..max scale.

    `title` is HTML (callers escape what they put in it); mark labels are escaped here."""
    scale = max(limit, projected, value, *(m for m, _ in marks), 1.0) * 1.05
    width = 300.0

    def x(amount: float) -> float:
        return round(amount / scale * width, 1)

    colour = "#b3261e" if value >= limit > 0 else "#1d6fd6"
    parts = [
        f'<rect x="0" y="14" width="{width}" height="18" fill="#e7ebf0" rx="3"/>',
        f'<rect x="0" y="14" width="{x(projected)}" height="18" fill="#1d6fd6" opacity=".25" '
        'rx="3"/>',
        f'<rect x="0" y="14" width="{x(value)}" height="18" fill="{colour}" rx="3"/>',
    ]
    for index, (amount, label) in enumerate(marks):
        # Labels near an edge grow inwards, so that none is cut off; a second label drops a
        # line lower in case two marks are close.
        anchor = (
            "end" if x(amount) > width * 0.8 else "start" if x(amount) < width * 0.2 else "middle"
        )
        parts.append(
            f'<line x1="{x(amount)}" x2="{x(amount)}" y1="10" y2="36" stroke="#1d2330" '
            f'stroke-width="1.5"/><text x="{x(amount)}" y="{46 + 10 * index}" font-size="9" '
            f'text-anchor="{anchor}">{escape(label)}</text>'
        )
    return (
        f'<div class="k">{title}</div><svg viewBox="-2 0 {width + 4} {50 + 10 * len(marks)}" '
        f'role="img" '
        f'aria-label="{escape(title)}">{"".join(parts)}</svg>'
    )


def _cap_bar(usage: UsageSnapshot) -> str:
    cap = usage.cap or 0
    ratio = f"{usage.utilization:.1%} of cap" if usage.utilization is not None else "no cap known"
    title = escape(
        f"Posts: {usage.consumed:,} ({ratio}) · projected {usage.forecast.projected:,.0f}"
        + (f" of {cap:,}" if cap else "")
    )
    marks = [(float(cap), "cap")] if cap else []
    return _bar(title, usage.consumed, usage.forecast.projected, float(cap), marks)


def _spend_bar(state: ProjectState, usage: UsageSnapshot) -> str:
    marks: list[tuple[float, str]] = []
    budget, limit = state.project.budget_usd, state.project.spending_limit_usd
    if budget is not None:
        marks.append((budget, f"budget ${budget:,.0f}"))
    if limit is not None:
        marks.append((limit, f"limit ${limit:,.0f}"))
    reward = billing.reward_ratio(usage.spend)
    projected = f"projected ${usage.projected_spend:,.2f}"
    over = [
        name
        for name, amount in (("budget", budget), ("spending limit", limit))
        if amount is not None and usage.projected_spend > amount
    ]
    if over:
        projected = f'<span class="bad">{projected}: over the {over[-1]}</span>'
    title = f"Spend: ${usage.spend:,.2f} · {projected} · xAI reward {reward:.0%}"
    ceiling = limit if limit is not None else budget if budget is not None else 0.0
    return _bar(title, usage.spend, usage.projected_spend, ceiling, marks)


# The daily chart's geometry, in SVG user units: plot area from (_LEFT, _TOP) to (_RIGHT, _BASE).
_WIDTH, _HEIGHT = 600.0, 196.0
_LEFT, _RIGHT, _TOP, _BASE = 46.0, 592.0, 10.0, 150.0
_ACTUAL, _FORECAST = "#1d6fd6", "#c25e00"


def _nice_ceiling(value: float) -> float:
    """The smallest round number (1, 1.2, 1.5, 2, ... 8 x 10^k) at or above `value`, for the top
    of the scale: the bars fill most of the height and the middle tick is round too."""
    magnitude = 10 ** math.floor(math.log10(value)) if value > 0 else 1.0
    steps = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)
    return next(m * magnitude for m in steps if m * magnitude >= value)


def _short(posts: float) -> str:
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if posts >= size:
            return f"{posts / size:.3g}{unit}"
    return f"{posts:.3g}"


def _daily_forecast(usage: UsageSnapshot, now: datetime) -> tuple[float, float, float] | None:
    """Expected Posts per day for the rest of the cycle, with its ~80% band (lower, mean, upper).

    The snapshot's forecast gives totals at cycle end; spread over the time left they are the
    average daily rate the projection expects (the day-by-day shape stays inside forecast.py)."""
    days_left = (usage.cycle.end - now).total_seconds() / 86400
    if days_left <= 0:
        return None

    def per_day(total: float) -> float:
        return max(total - usage.consumed, 0.0) / days_left

    forecast = usage.forecast
    return per_day(forecast.lower), per_day(forecast.projected), per_day(forecast.upper)


def _history(usage: UsageSnapshot, now: datetime) -> str:
    """Daily Posts over the whole cycle: actual days as bars (today partial, lighter), the days
    left as the forecast (dashed, with its 80% band), a Posts/day scale and a date axis."""
    first, end = usage.cycle.start.date(), usage.cycle.end.date()
    today = now.date()
    length = max((end - first).days, 1)
    actual = [first + timedelta(days=n) for n in range(min((today - first).days + 1, length))]
    future = [d for d in (first + timedelta(days=n) for n in range(length)) if d > today]
    rate = _daily_forecast(usage, now) if future else None
    peak = max((usage.daily.get(d, 0) for d in actual), default=0)
    top = _nice_ceiling(max(peak, rate[2] if rate else 0.0, 1.0))
    slot = (_RIGHT - _LEFT) / length

    def x(day: date) -> float:
        return _LEFT + (day - first).days * slot

    def y(posts: float) -> float:
        return round(_BASE - posts / top * (_BASE - _TOP), 1)

    parts = []
    for tick in (0.0, top / 2, top):
        parts.append(
            f'<line x1="{_LEFT}" x2="{_RIGHT}" y1="{y(tick)}" y2="{y(tick)}" stroke="#e1e5eb"/>'
            f'<text x="{_LEFT - 4}" y="{y(tick) + 4}" text-anchor="end">{_short(tick)}</text>'
        )
    for day in actual:
        count = usage.daily.get(day, 0)
        partial = " (so far)" if day == today else ""
        parts.append(
            f'<rect x="{x(day) + 0.5:.1f}" y="{y(count)}" width="{max(slot - 1, 1):.1f}" '
            f'height="{round(_BASE - y(count), 1)}" fill="{_ACTUAL}" '
            f'opacity="{".45" if day == today else "1"}"><title>{day:%b %d}: {count:,} '
            f"Posts{partial}</title></rect>"
        )
    if rate is not None:
        lower, mean, upper = rate
        left, right = x(future[0]), _RIGHT
        parts.append(
            f'<rect x="{left:.1f}" y="{y(upper)}" width="{right - left:.1f}" '
            f'height="{round(y(lower) - y(upper), 1)}" fill="{_FORECAST}" opacity=".15">'
            f"<title>80% band: {lower:,.0f} to {upper:,.0f} Posts/day</title></rect>"
        )
        for day in future:
            parts.append(
                f'<rect x="{x(day) + 1:.1f}" y="{y(mean)}" width="{max(slot - 2, 1):.1f}" '
                f'height="{round(_BASE - y(mean), 1)}" fill="none" stroke="{_FORECAST}" '
                f'stroke-dasharray="3 2"><title>{day:%b %d}: expected {mean:,.0f} Posts '
                f"(80% band {lower:,.0f} to {upper:,.0f})</title></rect>"
            )
    parts.append(f'<line x1="{_LEFT}" x2="{_RIGHT}" y1="{_BASE}" y2="{_BASE}" stroke="#5b6575"/>')
    parts.extend(_date_axis(first, today, end, x(today) + slot / 2))
    legend = (
        f'<rect x="{_LEFT}" y="{_HEIGHT - 12}" width="10" height="9" fill="{_ACTUAL}"/>'
        f'<text x="{_LEFT + 14}" y="{_HEIGHT - 4}">actual</text>'
    )
    if rate is not None:
        legend += (
            f'<rect x="{_LEFT + 86}" y="{_HEIGHT - 12}" width="10" height="9" fill="none" '
            f'stroke="{_FORECAST}" stroke-dasharray="3 2"/>'
            f'<text x="{_LEFT + 100}" y="{_HEIGHT - 4}">forecast {_short(rate[1])}/day, '
            f"shaded: 80% band {_short(rate[0])} to {_short(rate[2])}</text>"
        )
    return (
        f'<div class="k">Daily Posts this cycle (peak {peak:,})</div>'
        f'<svg class="daily" viewBox="0 0 {_WIDTH:.0f} {_HEIGHT:.0f}" role="img" font-size="10" '
        f'fill="#1d2330" aria-label="daily Posts this cycle, with the forecast">'
        f"{''.join(parts)}{legend}</svg>"
    )


def _date_axis(first: date, today: date, end: date, today_x: float) -> list[str]:
    """Ticks and labels for the cycle's first day, today and the reset day; today's label drops
    a line when it would run into the others."""
    row, low = _BASE + 14, _BASE + 27
    # Room for the edge labels at the larger font of narrow screens (the CSS media query).
    today_row = row if _LEFT + 110 < today_x < _RIGHT - 160 else low
    labels = [
        (_LEFT, row, "start", f"{first:%b %d}"),
        (today_x, today_row, "middle", f"today {today:%b %d}"),
        (_RIGHT, row, "end", f"{end:%b %d} reset"),
    ]
    return [
        f'<line x1="{at:.1f}" x2="{at:.1f}" y1="{_BASE}" y2="{_BASE + 4}" stroke="#5b6575"/>'
        f'<text x="{at:.1f}" y="{height}" text-anchor="{anchor}">{text}</text>'
        for at, height, anchor, text in labels
    ]


def _apps(usage: UsageSnapshot) -> str:
    if not usage.apps:
        return ""
    total = sum(app.consumed for app in usage.apps) or 1
    rows = "".join(
        f"<tr><td>{escape(app.app_id)}</td><td>{app.consumed:,}</td>"
        f"<td>{app.consumed / total:.1%}</td><td>{app.today:,}</td></tr>"
        for app in sorted(usage.apps, key=lambda a: -a.consumed)
    )
    return (
        "<table><tr><th>App</th><th>Posts this cycle</th><th>Share</th><th>Today</th></tr>"
        f"{rows}</table>"
    )
