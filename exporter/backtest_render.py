"""A backtest's result as a table or as JSON, and its progress on stderr."""

from __future__ import annotations

import json
import statistics
import sys
from datetime import UTC, datetime
from typing import Any

from exporter.backtest import DAY, EVENTS, LEAD_GOAL, Backtest, JudgedFiring


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


def stderr_progress(stage: str, done: int, total: int, item: str) -> None:
    """A line per tenth of each stage on stderr (stdout carries the result)."""
    if done == total or done % max(total // 10, 1) == 0:
        sys.stderr.write(f"backtest: {stage} {done}/{total} {item}".rstrip() + "\n")
        sys.stderr.flush()
