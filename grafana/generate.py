"""Generate the bundled Grafana dashboards as stable, pretty JSON from plain dictionaries."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

Json = dict[str, Any]

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
OVERVIEW_FILE = "x-usage-overview.json"
HEALTH_FILE = "x-usage-exporter-health.json"
OVERVIEW_UID = "xapi-usage-overview"
HEALTH_UID = "xapi-exporter-health"

SCHEMA_VERSION = 39
TAGS = ["x-api", "x-usage-exporter"]
DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}

# Every project series carries `project`; the exporter's own process-wide series carry only `job`.
PROJECT = '{job=~"$job", project=~"$project"}'
JOB = '{job=~"$job"}'

DAY_SECONDS = 86_400
# Some series are absent on purpose ("no cap exhaustion this cycle", "no next reward tier"). A
# stat over several projects would silently drop those projects, so their queries fall back to
# this value (mapped to a text) for every project that does have data. See or_sentinel().
SENTINEL = -1

# Plausible stand-ins for Grafana's variables, for tools that evaluate or parse panel queries.
SAMPLE_VARIABLES: Mapping[str, str] = {
    "datasource": "prometheus",
    "job": "x-usage-exporter",
    "project": "production",
    "__rate_interval": "1m",
    "__interval": "1d",
    "__range": "7d",
}

_VARIABLE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::\w+)?\}|(?P<plain>\w+))")


class Query(NamedTuple):
    """One PromQL expression of a panel and how its series are named in the legend."""

    expr: str
    legend: str = ""


class PanelQuery(NamedTuple):
    """A panel query as it stands in a generated dashboard, for tests that run or inspect it."""

    dashboard: str
    panel: str
    expr: str
    ref_id: str
    instant: bool


class VariableQuery(NamedTuple):
    """A templating variable's query (`label_values(...)`) as it stands in a dashboard."""

    dashboard: str
    variable: str
    query: str


def expand_variables(expr: str, values: Mapping[str, str] = SAMPLE_VARIABLES) -> str:
    """Replace `$var`, `${var}` and `${var:format}` with values; an unknown variable is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        if name not in values:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def selector(metric: str, labels: str = PROJECT) -> str:
    """A metric with the dashboard's variable filters."""
    return f"{metric}{labels}"


def or_sentinel(expr: str, present: str) -> str:
    """`expr`, or SENTINEL for each series of `present` (same labels) that `expr` lacks."""
    return f"{expr} or ({present}) * 0 + ({SENTINEL})"


# --- layout -------------------------------------------------------------------------------------


class Grid:
    """Places panels left to right on Grafana's 24-column grid, wrapping when a line is full."""

    width = 24

    def __init__(self) -> None:
        self._x = 0
        self._y = 0
        self._line_height = 0

    def place(self, w: int, h: int) -> Json:
        if self._x + w > self.width:
            self._new_line()
        position = {"h": h, "w": w, "x": self._x, "y": self._y}
        self._x += w
        self._line_height = max(self._line_height, h)
        return position

    def row(self) -> Json:
        self._new_line()
        position = {"h": 1, "w": self.width, "x": 0, "y": self._y}
        self._y += 1
        return position

    def _new_line(self) -> None:
        if self._x:
            self._y += self._line_height
        self._x = 0
        self._line_height = 0


# --- field config helpers -----------------------------------------------------------------------


def steps(*pairs: tuple[str, float | None]) -> Json:
    """Absolute thresholds; the first pair's value is None (the base colour)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in pairs]}


def value_text(mapping: Mapping[str, tuple[str, str]]) -> list[Json]:
    """Value mappings: raw value -> (text, colour)."""
    options = {
        raw: {"color": color, "index": index, "text": text}
        for index, (raw, (text, color)) in enumerate(mapping.items())
    }
    return [{"options": options, "type": "value"}]


def by_name(name: str, *properties: tuple[str, Any]) -> Json:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": key, "value": value} for key, value in properties],
    }


def by_regexp(pattern: str, *properties: tuple[str, Any]) -> Json:
    return {
        "matcher": {"id": "byRegexp", "options": pattern},
        "properties": [{"id": key, "value": value} for key, value in properties],
    }


def fixed_color(color: str) -> tuple[str, Any]:
    return ("color", {"fixedColor": color, "mode": "fixed"})


DASHED: tuple[str, Any] = ("custom.lineStyle", {"dash": [10, 10], "fill": "dash"})
NEUTRAL = steps(("text", None))
REDUCE_LAST: Json = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def field_config(
    unit: str,
    *,
    decimals: int | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    thresholds: Json | None = None,
    mappings: Sequence[Json] = (),
    no_value: str | None = None,
    color_mode: str = "thresholds",
    custom: Json | None = None,
    overrides: Sequence[Json] = (),
) -> Json:
    defaults: Json = {
        "color": {"mode": color_mode},
        "mappings": list(mappings),
        "thresholds": thresholds or steps(("green", None)),
        "unit": unit,
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if no_value is not None:
        defaults["noValue"] = no_value
    if custom is not None:
        defaults["custom"] = custom
    return {"defaults": defaults, "overrides": list(overrides)}


# --- panels -------------------------------------------------------------------------------------
# Builders take the id and title positionally and the rest by keyword, so that each panel reads as
# a small table of what it shows. `about` becomes the panel description: the question it answers.


def _data_panel(
    kind: str,
    pid: int,
    title: str,
    *,
    about: str,
    pos: Json,
    queries: Sequence[Query],
    fields: Json,
    options: Json,
    instant: bool,
    extra: Json | None = None,
) -> Json:
    targets = [
        {
            "datasource": DATASOURCE,
            "editorMode": "code",
            "expr": query.expr,
            "instant": instant,
            "legendFormat": query.legend or "__auto",
            "range": not instant,
            "refId": chr(ord("A") + index),
        }
        for index, query in enumerate(queries)
    ]
    panel: Json = {
        "datasource": DATASOURCE,
        "description": about,
        "fieldConfig": fields,
        "gridPos": pos,
        "id": pid,
        "options": options,
        "targets": targets,
        "title": title,
        "type": kind,
    }
    panel.update(extra or {})
    return panel


def stat(
    pid: int,
    title: str,
    *,
    about: str,
    pos: Json,
    queries: Sequence[Query],
    fields: Json,
    text_mode: str = "auto",
    color_mode: str = "value",
) -> Json:
    options = {
        "colorMode": color_mode,
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": REDUCE_LAST,
        "showPercentChange": False,
        "textMode": text_mode,
        "wideLayout": True,
    }
    return _data_panel(
        "stat",
        pid,
        title,
        about=about,
        pos=pos,
        queries=queries,
        fields=fields,
        options=options,
        instant=True,
    )


def gauge(
    pid: int, title: str, *, about: str, pos: Json, queries: Sequence[Query], fields: Json
) -> Json:
    options = {
        "minVizHeight": 75,
        "minVizWidth": 75,
        "orientation": "auto",
        "reduceOptions": REDUCE_LAST,
        "showThresholdLabels": False,
        "showThresholdMarkers": True,
        "sizing": "auto",
    }
    return _data_panel(
        "gauge",
        pid,
        title,
        about=about,
        pos=pos,
        queries=queries,
        fields=fields,
        options=options,
        instant=True,
    )


def bar_gauge(
    pid: int, title: str, *, about: str, pos: Json, queries: Sequence[Query], fields: Json
) -> Json:
    options = {
        "displayMode": "gradient",
        "maxVizHeight": 300,
        "minVizHeight": 16,
        "minVizWidth": 8,
        "namePlacement": "auto",
        "orientation": "horizontal",
        "reduceOptions": REDUCE_LAST,
        "showUnfilled": True,
        "sizing": "auto",
        "valueMode": "color",
    }
    return _data_panel(
        "bargauge",
        pid,
        title,
        about=about,
        pos=pos,
        queries=queries,
        fields=fields,
        options=options,
        instant=True,
    )


def pie_chart(
    pid: int, title: str, *, about: str, pos: Json, queries: Sequence[Query], fields: Json
) -> Json:
    options = {
        "displayLabels": ["percent"],
        "legend": {
            "displayMode": "table",
            "placement": "right",
            "showLegend": True,
            "values": ["value", "percent"],
        },
        "pieType": "donut",
        "reduceOptions": REDUCE_LAST,
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return _data_panel(
        "piechart",
        pid,
        title,
        about=about,
        pos=pos,
        queries=queries,
        fields=fields,
        options=options,
        instant=True,
    )


def line_style(
    *,
    draw_style: str = "line",
    fill_opacity: int = 10,
    stacking: str = "none",
    bar_alignment: int = 0,
    thresholds_style: str = "off",
) -> Json:
    """The `fieldConfig.defaults.custom` block of a time series panel."""
    return {
        "axisPlacement": "auto",
        "barAlignment": bar_alignment,
        "drawStyle": draw_style,
        "fillOpacity": fill_opacity,
        "gradientMode": "none",
        "lineInterpolation": "linear",
        "lineWidth": 1,
        "pointSize": 4,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": stacking},
        "thresholdsStyle": {"mode": thresholds_style},
    }


def time_series(
    pid: int,
    title: str,
    *,
    about: str,
    pos: Json,
    queries: Sequence[Query],
    fields: Json,
    legend_calcs: Sequence[str] = ("lastNotNull",),
    extra: Json | None = None,
) -> Json:
    options = {
        "legend": {
            "calcs": list(legend_calcs),
            "displayMode": "table" if legend_calcs else "list",
            "placement": "bottom",
            "showLegend": True,
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _data_panel(
        "timeseries",
        pid,
        title,
        about=about,
        pos=pos,
        queries=queries,
        fields=fields,
        options=options,
        instant=False,
        extra=extra,
    )


def state_timeline(
    pid: int, title: str, *, about: str, pos: Json, queries: Sequence[Query], fields: Json
) -> Json:
    options = {
        "alignValue": "left",
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "mergeValues": True,
        "rowHeight": 0.9,
        "showValue": "never",
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return _data_panel(
        "state-timeline",
        pid,
        title,
        about=about,
        pos=pos,
        queries=queries,
        fields=fields,
        options=options,
        instant=False,
    )


def text(pid: int, title: str, pos: Json, content: str) -> Json:
    return {
        "fieldConfig": {"defaults": {"unit": "none"}, "overrides": []},
        "gridPos": pos,
        "id": pid,
        "options": {"code": {"language": "markdown"}, "content": content, "mode": "markdown"},
        "title": title,
        "type": "text",
    }


def row(pid: int, title: str, pos: Json, *, repeat: str | None = None) -> Json:
    panel: Json = {
        "collapsed": False,
        "gridPos": pos,
        "id": pid,
        "panels": [],
        "title": title,
        "type": "row",
    }
    if repeat:
        panel["repeat"] = repeat
    return panel


# --- dashboard skeleton -------------------------------------------------------------------------


def variables() -> list[Json]:
    """`datasource`, then `job` and `project`, each narrowing the next."""

    def query_variable(name: str, label: str, query: str) -> Json:
        return {
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "datasource": DATASOURCE,
            "definition": query,
            "hide": 0,
            "includeAll": True,
            "label": label,
            "multi": True,
            "name": name,
            "options": [],
            "query": query,
            "refresh": 2,
            "regex": "",
            "skipUrlSync": False,
            "sort": 1,
            "type": "query",
        }

    return [
        {
            "current": {},
            "hide": 0,
            "includeAll": False,
            "label": "Data source",
            "multi": False,
            "name": "datasource",
            "options": [],
            "query": "prometheus",
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
            "type": "datasource",
        },
        query_variable("job", "Job", "label_values(xapi_exporter_build_info, job)"),
        query_variable(
            "project", "Project", 'label_values(xapi_project_info{job=~"$job"}, project)'
        ),
    ]


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[Json],
    *,
    time_from: str,
    timezone: str,
) -> Json:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "asDropdown": False,
                "icon": "external link",
                "includeVars": True,
                "keepTime": True,
                "tags": ["x-usage-exporter"],
                "targetBlank": False,
                "title": "X API usage dashboards",
                "type": "dashboards",
            }
        ],
        "liveNow": False,
        "panels": panels,
        "refresh": "5m",
        "schemaVersion": SCHEMA_VERSION,
        "tags": list(TAGS),
        "templating": {"list": variables()},
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": timezone,
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# --- the usage overview -------------------------------------------------------------------------

OVERVIEW_INTRO = """\
**Spend on this dashboard is the estimated Post-read spend**: Posts consumed this billing cycle \
times the configured price per Post read. The X API usage endpoint counts Posts only; user \
lookups, DMs, writes and Owned Reads are billed too and are not in these figures, so the \
Developer Console's bill can be higher. The credit balance below reflects everything.

Values refresh once per exporter poll (every 5 minutes by default). Billing days and cycles are \
in UTC, and so is this dashboard. Freshness and errors: *X API usage exporter health*."""


def overview() -> Json:
    g = Grid()
    consumed = selector("xapi_project_posts_consumed")
    panels: list[Json] = [
        text(1, "About these numbers", g.place(24, 4), OVERVIEW_INTRO),
        row(100, "Billing cycle at a glance", g.row()),
        gauge(
            2,
            "Cap utilization",
            about="How much of the monthly Post cap has each project used this billing cycle?",
            pos=g.place(6, 6),
            queries=[Query(selector("xapi_project_cap_utilization_ratio"), "{{project}}")],
            fields=field_config(
                "percentunit",
                decimals=1,
                minimum=0,
                maximum=1,
                thresholds=steps(("green", None), ("orange", 0.8), ("red", 0.95)),
            ),
        ),
        stat(
            3,
            "Posts consumed this cycle",
            about="How many Posts has each project read this billing cycle (deduplicated per "
            "UTC day)?",
            pos=g.place(4, 6),
            queries=[Query(consumed, "{{project}}")],
            fields=field_config("short", decimals=0, thresholds=NEUTRAL),
        ),
        stat(
            4,
            "Time to cap",
            about="When will the forecast reach the cap? 'not this cycle' when the forecast stays "
            "below the cap until the cycle ends.",
            pos=g.place(5, 6),
            queries=[
                Query(
                    or_sentinel(
                        f"clamp_min({selector('xapi_project_cap_exhaustion_timestamp_seconds')}"
                        " - time(), 0)",
                        consumed,
                    ),
                    "{{project}}",
                )
            ],
            fields=field_config(
                "dtdurations",
                decimals=2,
                thresholds=steps(
                    ("red", None), ("orange", 3 * DAY_SECONDS), ("green", 7 * DAY_SECONDS)
                ),
                mappings=value_text(
                    {str(SENTINEL): ("not this cycle", "green"), "0": ("cap reached", "red")}
                ),
                no_value="not this cycle",
            ),
        ),
        stat(
            5,
            "Time left in cycle",
            about="How long until the billing cycle ends and the cap resets?",
            pos=g.place(5, 6),
            queries=[
                Query(
                    f"{selector('xapi_project_cycle_end_timestamp_seconds')} - time()",
                    "{{project}}",
                )
            ],
            fields=field_config("dtdurations", decimals=2, thresholds=NEUTRAL),
        ),
        stat(
            6,
            "Cycle start and end",
            about="Which billing cycle are these numbers for (00:00 UTC boundaries)?",
            pos=g.place(4, 6),
            queries=[
                Query(
                    f"{selector('xapi_project_cycle_start_timestamp_seconds')} * 1000",
                    "{{project}} start",
                ),
                Query(
                    f"{selector('xapi_project_cycle_end_timestamp_seconds')} * 1000",
                    "{{project}} end",
                ),
            ],
            fields=field_config("dateTimeAsIso", thresholds=NEUTRAL),
            text_mode="value_and_name",
        ),
        stat(
            7,
            "Estimated spend this cycle",
            about="What have the Posts read this cycle cost so far (estimated Post-read spend)?",
            pos=g.place(4, 6),
            queries=[Query(selector("xapi_project_spend_usd"), "{{project}}")],
            fields=field_config("currencyUSD", decimals=2, thresholds=NEUTRAL),
        ),
        stat(
            8,
            "Projected spend at cycle end",
            about="What will the Post reads cost by the end of the cycle at the forecast rate?",
            pos=g.place(4, 6),
            queries=[Query(selector("xapi_project_spend_projected_usd"), "{{project}}")],
            fields=field_config("currencyUSD", decimals=2, thresholds=NEUTRAL),
        ),
        bar_gauge(
            9,
            "Spend against budget and spending limit",
            about="How close are spend and projected spend to the configured budget and to the "
            "spending limit, at which the X API blocks all requests?",
            pos=g.place(8, 6),
            queries=[
                Query(
                    f"{selector('xapi_project_spend_usd')} / {selector('xapi_project_budget_usd')}",
                    "{{project}}: spend / budget",
                ),
                Query(
                    f"{selector('xapi_project_spend_projected_usd')}"
                    f" / {selector('xapi_project_budget_usd')}",
                    "{{project}}: projected / budget",
                ),
                Query(
                    f"{selector('xapi_project_spend_usd')}"
                    f" / {selector('xapi_project_spending_limit_usd')}",
                    "{{project}}: spend / spending limit",
                ),
            ],
            fields=field_config(
                "percentunit",
                decimals=0,
                minimum=0,
                maximum=1,
                thresholds=steps(("green", None), ("orange", 0.9), ("red", 1)),
                no_value="no budget or spending limit configured",
            ),
        ),
        stat(
            10,
            "Requests refused (capped, out of credits)",
            about="Is the X API refusing requests right now because the monthly cap is reached "
            "(Post reads) or the prepaid credits are used up (every billed request)?",
            pos=g.place(4, 6),
            queries=[
                Query(selector("xapi_project_usage_capped"), "{{project}}: cap"),
                Query(selector("xapi_project_credits_depleted"), "{{project}}: credits"),
            ],
            fields=field_config(
                "none",
                thresholds=steps(("green", None), ("red", 1)),
                mappings=value_text({"0": ("allowed", "green"), "1": ("REFUSED", "red")}),
            ),
        ),
        stat(
            11,
            "Data age",
            about="How old are these numbers (time since the last successful poll)?",
            pos=g.place(4, 6),
            queries=[
                Query(
                    f"time() - {selector('xapi_exporter_last_success_timestamp_seconds')}",
                    "{{project}}",
                )
            ],
            fields=field_config(
                "dtdurations",
                decimals=1,
                thresholds=steps(("green", None), ("orange", 900), ("red", 3600)),
                no_value="no successful poll yet",
            ),
        ),
        row(101, "Project $project", g.row(), repeat="project"),
        time_series(
            12,
            "Cycle consumption, forecast and cap",
            about="Will this project reach its cap before the cycle ends? Posts consumed, the "
            "forecast for cycle end with its 80% band, and the cap.",
            pos=g.place(12, 9),
            queries=[
                Query(consumed, "consumed"),
                Query(selector("xapi_project_posts_projected"), "forecast at cycle end"),
                Query(selector("xapi_project_posts_projected_lower"), "forecast lower (80%)"),
                Query(selector("xapi_project_posts_projected_upper"), "forecast upper (80%)"),
                Query(selector("xapi_project_cap_posts"), "cap"),
            ],
            fields=field_config(
                "short",
                decimals=0,
                minimum=0,
                color_mode="palette-classic",
                custom=line_style(fill_opacity=0),
                overrides=[
                    by_name("consumed", fixed_color("blue"), ("custom.lineWidth", 2)),
                    by_name("forecast at cycle end", fixed_color("purple"), DASHED),
                    by_name(
                        "forecast upper (80%)",
                        fixed_color("purple"),
                        ("custom.lineWidth", 0),
                        ("custom.fillOpacity", 15),
                        ("custom.fillBelowTo", "forecast lower (80%)"),
                    ),
                    by_name("forecast lower (80%)", fixed_color("purple"), ("custom.lineWidth", 0)),
                    by_name("cap", fixed_color("red"), DASHED, ("custom.lineWidth", 2)),
                ],
            ),
        ),
        time_series(
            13,
            "Spend, budget and spending limit",
            about="Will this project's estimated spend stay under its budget and well under its "
            "spending limit?",
            pos=g.place(12, 9),
            queries=[
                Query(selector("xapi_project_spend_usd"), "spend"),
                Query(selector("xapi_project_spend_projected_usd"), "projected at cycle end"),
                Query(selector("xapi_project_budget_usd"), "budget"),
                Query(selector("xapi_project_spending_limit_usd"), "spending limit"),
            ],
            fields=field_config(
                "currencyUSD",
                decimals=2,
                minimum=0,
                color_mode="palette-classic",
                custom=line_style(fill_opacity=0),
                overrides=[
                    by_name("spend", fixed_color("blue"), ("custom.lineWidth", 2)),
                    by_name("projected at cycle end", fixed_color("purple"), DASHED),
                    by_name("budget", fixed_color("orange"), DASHED),
                    by_name("spending limit", fixed_color("red"), DASHED, ("custom.lineWidth", 2)),
                ],
            ),
        ),
        row(102, "Daily consumption", g.row()),
        time_series(
            14,
            "Posts per UTC day, last 30 days",
            about="How many Posts did each project read per UTC day? Each bar covers one UTC day "
            "(the tooltip shows the day's end); today is in the next panel.",
            pos=g.place(16, 8),
            queries=[
                Query(
                    f"max_over_time({selector('xapi_project_posts_consumed_today')}[1d])",
                    "{{project}}",
                )
            ],
            fields=field_config(
                "short",
                decimals=0,
                minimum=0,
                color_mode="palette-classic",
                custom=line_style(
                    draw_style="bars", fill_opacity=80, stacking="normal", bar_alignment=-1
                ),
            ),
            legend_calcs=("mean", "max"),
            extra={"interval": "1d", "timeFrom": "30d", "hideTimeOverride": False},
        ),
        time_series(
            15,
            "Today against the daily norm",
            about="Is today's consumption unusual? Posts read this UTC day so far against the "
            "median of the last 7 complete days (what the spike alert compares).",
            pos=g.place(8, 8),
            queries=[
                Query(selector("xapi_project_posts_consumed_today"), "{{project}} today"),
                Query(
                    selector("xapi_project_posts_consumed_daily_baseline"),
                    "{{project}} 7-day median",
                ),
            ],
            fields=field_config(
                "short",
                decimals=0,
                minimum=0,
                color_mode="palette-classic",
                custom=line_style(),
                overrides=[by_regexp(".* 7-day median$", DASHED, ("custom.fillOpacity", 0))],
            ),
        ),
        row(103, "Apps", g.row()),
        pie_chart(
            16,
            "Share per App this cycle",
            about="Which client Apps read the Posts this cycle, and what share each?",
            pos=g.place(8, 8),
            queries=[
                Query(
                    f"sum by (project, app_id) ({selector('xapi_app_posts_consumed')})",
                    "{{app_id}} ({{project}})",
                )
            ],
            fields=field_config("short", decimals=0, color_mode="palette-classic"),
        ),
        bar_gauge(
            17,
            "Top Apps this cycle",
            about="Which ten Apps read the most Posts this billing cycle?",
            pos=g.place(8, 8),
            queries=[
                Query(
                    f"topk(10, {selector('xapi_app_posts_consumed')})",
                    "{{app_id}} ({{project}})",
                )
            ],
            fields=field_config("short", decimals=0, minimum=0, color_mode="continuous-BlPu"),
        ),
        bar_gauge(
            18,
            "Top Apps today",
            about="Which ten Apps read the most Posts this UTC day so far?",
            pos=g.place(8, 8),
            queries=[
                Query(
                    f"topk(10, {selector('xapi_app_posts_consumed_today')})",
                    "{{app_id}} ({{project}})",
                )
            ],
            fields=field_config("short", decimals=0, minimum=0, color_mode="continuous-BlPu"),
        ),
        row(104, "Credits, xAI rewards and pricing", g.row()),
        stat(
            19,
            "Credit balance",
            about="How much prepaid and free credit is left (covers all billed usage, not only "
            "Post reads)? Empty when the credits endpoint is not available.",
            pos=g.place(6, 6),
            queries=[
                Query(selector("xapi_credits_total_balance_usd"), "{{project}} total"),
                Query(selector("xapi_credits_prepaid_balance_usd"), "{{project}} prepaid"),
                Query(selector("xapi_credits_free_balance_usd"), "{{project}} free"),
            ],
            fields=field_config(
                "currencyUSD",
                decimals=2,
                thresholds=steps(("red", None), ("green", 0.01)),
                no_value="not available",
            ),
            text_mode="value_and_name",
        ),
        stat(
            20,
            "Credits run out in",
            about="When does the credit balance run out at the last 7 days' spend rate?",
            pos=g.place(4, 6),
            queries=[
                Query(
                    f"clamp_min({selector('xapi_credits_depletion_timestamp_seconds')}"
                    " - time(), 0)",
                    "{{project}}",
                )
            ],
            fields=field_config(
                "dtdurations",
                decimals=2,
                thresholds=steps(
                    ("red", None), ("orange", 7 * DAY_SECONDS), ("green", 14 * DAY_SECONDS)
                ),
                no_value="no forecast",
            ),
        ),
        stat(
            21,
            "Credits endpoint",
            about="Does the X API report a credit balance for this project at all?",
            pos=g.place(3, 6),
            queries=[Query(selector("xapi_credits_available"), "{{project}}")],
            fields=field_config(
                "none",
                thresholds=NEUTRAL,
                mappings=value_text({"0": ("not available", "text"), "1": ("available", "green")}),
            ),
        ),
        stat(
            22,
            "xAI reward rate",
            about="Which xAI credit reward tier has this cycle's cumulative spend reached?",
            pos=g.place(4, 6),
            queries=[Query(selector("xapi_project_xai_reward_ratio"), "{{project}}")],
            fields=field_config(
                "percentunit",
                decimals=0,
                thresholds=steps(("text", None), ("blue", 0.1), ("purple", 0.2)),
            ),
        ),
        stat(
            23,
            "Spend to next reward tier",
            about="How much more spend this cycle reaches the next xAI reward tier?",
            pos=g.place(4, 6),
            queries=[
                Query(
                    or_sentinel(
                        selector("xapi_project_xai_reward_next_tier_spend_usd"),
                        f"{selector('xapi_project_xai_reward_ratio')} >= 0.2",
                    ),
                    "{{project}}",
                )
            ],
            fields=field_config(
                "currencyUSD",
                decimals=2,
                thresholds=NEUTRAL,
                mappings=value_text({str(SENTINEL): ("top tier reached", "purple")}),
            ),
        ),
        stat(
            24,
            "Price per Post read",
            about="Which price per Post read do the spend figures use?",
            pos=g.place(3, 6),
            queries=[Query(selector("xapi_project_pricing_post_read_usd"), "{{project}}")],
            fields=field_config("currencyUSD", decimals=4, thresholds=NEUTRAL),
        ),
    ]
    return dashboard(
        OVERVIEW_UID,
        "X API usage overview",
        "Post-read consumption, cap, estimated spend, Apps and credits of X API pay-per-use "
        "projects, from x-usage-exporter.",
        panels,
        time_from="now-7d",
        timezone="utc",
    )


# --- the exporter's health ----------------------------------------------------------------------


def exporter_health() -> Json:
    g = Grid()
    up_down = value_text({"0": ("down", "red"), "1": ("up", "green")})
    per_minute = "sum by (project, endpoint, {by}) (rate({metric}{labels}[$__rate_interval])) * 60"
    panels: list[Json] = [
        row(100, "Status", g.row()),
        stat(
            1,
            "Exporter up",
            about="Can Prometheus scrape the exporter?",
            pos=g.place(4, 5),
            queries=[Query("up" + JOB, "{{instance}}")],
            fields=field_config(
                "none", thresholds=steps(("red", None), ("green", 1)), mappings=up_down
            ),
        ),
        stat(
            2,
            "Last poll",
            about="Did the last poll of the usage endpoint succeed, per project?",
            pos=g.place(4, 5),
            queries=[Query(selector("xapi_exporter_poll_success"), "{{project}}")],
            fields=field_config(
                "none",
                thresholds=steps(("red", None), ("green", 1)),
                mappings=value_text({"0": ("failed", "red"), "1": ("ok", "green")}),
            ),
        ),
        stat(
            3,
            "Data age",
            about="How long ago did the last successful poll end (how stale are the numbers), "
            "and how old is the credit balance (its endpoint can fail on its own)?",
            pos=g.place(4, 5),
            queries=[
                Query(
                    f"time() - {selector('xapi_exporter_last_success_timestamp_seconds')}",
                    "{{project}}",
                ),
                Query(
                    "time() - " + selector("xapi_exporter_credits_last_success_timestamp_seconds"),
                    "{{project}}: credit balance",
                ),
            ],
            fields=field_config(
                "dtdurations",
                decimals=1,
                thresholds=steps(("green", None), ("orange", 900), ("red", 3600)),
                no_value="no successful poll yet",
            ),
        ),
        stat(
            4,
            "Why the last poll failed",
            about="For each project whose last poll failed: the reason.",
            pos=g.place(4, 5),
            queries=[
                Query(f"{selector('xapi_exporter_poll_error')} == 1", "{{project}}: {{reason}}")
            ],
            fields=field_config(
                "none", thresholds=steps(("red", None)), no_value="no failing poll"
            ),
            text_mode="name",
            color_mode="background",
        ),
        stat(
            5,
            "Config (re)load, history file",
            about="Did the last configuration load or reload succeed (a failed reload keeps "
            "the old configuration)? With --history.file: was it read at start, and did its "
            "last write work?",
            pos=g.place(4, 5),
            queries=[
                Query(selector("xapi_exporter_config_last_reload_successful", JOB), "{{instance}}"),
                Query(
                    selector("xapi_exporter_history_file_load_success", JOB),
                    "{{instance}}: history file read",
                ),
                Query(
                    selector("xapi_exporter_history_file_write_success", JOB),
                    "{{instance}}: history file written",
                ),
            ],
            fields=field_config(
                "none",
                thresholds=steps(("red", None), ("green", 1)),
                mappings=value_text({"0": ("failed", "red"), "1": ("ok", "green")}),
            ),
        ),
        stat(
            6,
            "Version",
            about="Which exporter version runs on each instance?",
            pos=g.place(4, 5),
            queries=[Query(selector("xapi_exporter_build_info", JOB), "{{instance}}: {{version}}")],
            fields=field_config("none", thresholds=NEUTRAL),
            text_mode="name",
        ),
        stat(
            7,
            "Config loaded, history kept",
            about="When was the configuration last loaded successfully, when was the history "
            "file last written, and how far back does each project's kept history go (the "
            "forecast's year-ago step needs about 400 days)?",
            pos=g.place(5, 4),
            queries=[
                Query(
                    selector("xapi_exporter_config_last_reload_success_timestamp_seconds", JOB)
                    + " * 1000",
                    "{{instance}}",
                ),
                Query(
                    selector("xapi_exporter_history_file_last_write_timestamp_seconds", JOB)
                    + " * 1000",
                    "{{instance}}: history file written",
                ),
                Query(
                    selector("xapi_exporter_history_oldest_day_timestamp_seconds") + " * 1000",
                    "{{project}}: history since",
                ),
            ],
            fields=field_config("dateTimeFromNow", thresholds=NEUTRAL),
        ),
        stat(
            8,
            "Poll interval",
            about="How often does the exporter poll the X API?",
            pos=g.place(4, 4),
            queries=[Query(selector("xapi_exporter_poll_interval_seconds", JOB), "{{instance}}")],
            fields=field_config("s", thresholds=NEUTRAL),
        ),
        stat(
            9,
            "Rate-limit requests left",
            about="How many usage requests are left in the current 15-minute rate-limit window?",
            pos=g.place(5, 4),
            queries=[Query(selector("xapi_exporter_rate_limit_remaining"), "{{project}}")],
            fields=field_config(
                "short",
                decimals=0,
                thresholds=steps(("red", None), ("orange", 2), ("green", 5)),
            ),
        ),
        stat(
            10,
            "Rate-limit window resets in",
            about="When does the current rate-limit window end?",
            pos=g.place(5, 4),
            queries=[
                Query(
                    f"clamp_min({selector('xapi_exporter_rate_limit_reset_timestamp_seconds')}"
                    " - time(), 0)",
                    "{{project}}",
                )
            ],
            fields=field_config(
                "dtdurations",
                decimals=1,
                thresholds=NEUTRAL,
                mappings=value_text({"0": ("already reset", "text")}),
            ),
        ),
        stat(
            18,
            "Daily data lag",
            about="How far behind is the X API's daily breakdown: time since the start of the "
            "newest UTC day in it (normally under a day)?",
            pos=g.place(5, 4),
            queries=[
                Query(
                    f"time() - {selector('xapi_project_data_newest_day_timestamp_seconds')}",
                    "{{project}}",
                )
            ],
            fields=field_config(
                "dtdurations",
                decimals=1,
                thresholds=steps(("green", None), ("orange", 1.5 * DAY_SECONDS)),
            ),
        ),
        row(101, "Polls", g.row()),
        state_timeline(
            11,
            "Poll results over time",
            about="When did polls fail, and for how long?",
            pos=g.place(12, 7),
            queries=[Query(selector("xapi_exporter_poll_success"), "{{project}}")],
            fields=field_config(
                "none",
                thresholds=steps(("red", None), ("green", 1)),
                mappings=value_text({"0": ("failed", "red"), "1": ("ok", "green")}),
                custom={"fillOpacity": 80, "lineWidth": 0},
            ),
        ),
        time_series(
            12,
            "Data freshness",
            about="How old were the exported numbers over time, against two poll intervals?",
            pos=g.place(12, 7),
            queries=[
                Query(
                    f"time() - {selector('xapi_exporter_last_success_timestamp_seconds')}",
                    "{{project}}",
                ),
                Query(
                    f"2 * {selector('xapi_exporter_poll_interval_seconds', JOB)}",
                    "2 x poll interval ({{instance}})",
                ),
            ],
            fields=field_config(
                "s",
                minimum=0,
                color_mode="palette-classic",
                custom=line_style(fill_opacity=0),
                overrides=[by_regexp("^2 x poll interval.*", fixed_color("orange"), DASHED)],
            ),
        ),
        time_series(
            13,
            "Poll duration",
            about="How long does a poll take, retries included?",
            pos=g.place(12, 7),
            queries=[Query(selector("xapi_exporter_poll_duration_seconds"), "{{project}}")],
            fields=field_config(
                "s", minimum=0, color_mode="palette-classic", custom=line_style(fill_opacity=0)
            ),
            legend_calcs=("mean", "max"),
        ),
        time_series(
            14,
            "Upstream errors by reason",
            about="Which errors happen, per minute and reason (`reason` values: see "
            "docs/metrics.md)?",
            pos=g.place(12, 7),
            queries=[
                Query(
                    per_minute.format(
                        by="reason", metric="xapi_exporter_upstream_errors_total", labels=PROJECT
                    ),
                    "{{project}} {{endpoint}}: {{reason}}",
                )
            ],
            fields=field_config(
                "cpm",
                minimum=0,
                color_mode="palette-classic",
                custom=line_style(fill_opacity=20),
            ),
            legend_calcs=("max",),
        ),
        row(102, "Upstream requests", g.row()),
        time_series(
            15,
            "Upstream requests by status code",
            about="What does the X API answer, per minute and HTTP status (`error` when no answer "
            "came)?",
            pos=g.place(10, 8),
            queries=[
                Query(
                    per_minute.format(
                        by="code", metric="xapi_exporter_upstream_requests_total", labels=PROJECT
                    ),
                    "{{project}} {{endpoint}}: {{code}}",
                )
            ],
            fields=field_config(
                "cpm",
                minimum=0,
                color_mode="palette-classic",
                custom=line_style(fill_opacity=30, stacking="normal"),
            ),
            legend_calcs=("max",),
        ),
        bar_gauge(
            16,
            "Errors in the selected range",
            about="How many upstream errors of each reason happened in the dashboard's time range?",
            pos=g.place(8, 8),
            queries=[
                Query(
                    "round(sum by (project, endpoint, reason) "
                    f"(increase({selector('xapi_exporter_upstream_errors_total')}[$__range])))"
                    " > 0",
                    "{{project}} {{endpoint}}: {{reason}}",
                )
            ],
            fields=field_config(
                "short",
                decimals=0,
                minimum=0,
                thresholds=steps(("orange", None)),
                no_value="no errors in this range",
            ),
        ),
        stat(
            19,
            "Fields missing or odd in the last answer",
            about="Which documented fields did the last usage answer lack or carry not as "
            "documented, and did it carry errors beside its data (the exporter then falls back, "
            "e.g. to the calendar month; docs/metrics.md lists each case)?",
            pos=g.place(6, 8),
            queries=[
                Query(
                    f"{selector('xapi_exporter_response_missing_field')} == 1",
                    "{{project}}: {{field}} missing",
                ),
                Query(
                    f"{selector('xapi_exporter_response_invalid_field')} == 1",
                    "{{project}}: {{field}} invalid",
                ),
                Query(
                    f"{selector('xapi_exporter_response_error_entries')} > 0",
                    "{{project}}: errors beside data",
                ),
            ],
            fields=field_config("none", thresholds=steps(("orange", None)), no_value="none"),
            text_mode="name",
            color_mode="background",
        ),
        row(103, "Rate limit", g.row()),
        time_series(
            17,
            "Rate-limit headroom",
            about="How close do polls come to the usage endpoint's 50 requests per 15 minutes?",
            pos=g.place(24, 7),
            queries=[Query(selector("xapi_exporter_rate_limit_remaining"), "{{project}}")],
            fields=field_config(
                "short",
                decimals=0,
                minimum=0,
                color_mode="palette-classic",
                thresholds=steps(("red", None), ("transparent", 5)),
                custom=line_style(fill_opacity=0, thresholds_style="line+area"),
            ),
            legend_calcs=("min", "lastNotNull"),
        ),
    ]
    return dashboard(
        HEALTH_UID,
        "X API usage exporter health",
        "Is x-usage-exporter scraping, polling the X API successfully, fresh and within the "
        "X API rate limit?",
        panels,
        time_from="now-24h",
        timezone="browser",
    )


# --- output -------------------------------------------------------------------------------------


def build_dashboards() -> dict[str, Json]:
    """Every dashboard, keyed by its file name in grafana/dashboards/."""
    return {OVERVIEW_FILE: overview(), HEALTH_FILE: exporter_health()}


def render(board: Json) -> str:
    """The committed form: two-space indent, sorted keys, trailing newline."""
    return json.dumps(board, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def iter_panels(board: Json) -> Iterator[Json]:
    """Every panel, including those nested in collapsed rows."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(boards: Mapping[str, Json] | None = None) -> list[PanelQuery]:
    """Every (dashboard file, panel title, expr) of the generated dashboards."""
    boards = build_dashboards() if boards is None else boards
    return [
        PanelQuery(name, panel["title"], target["expr"], target["refId"], bool(target["instant"]))
        for name, board in boards.items()
        for panel in iter_panels(board)
        for target in panel.get("targets", [])
    ]


def variable_queries(boards: Mapping[str, Json] | None = None) -> list[VariableQuery]:
    """Every query variable's query of the generated dashboards."""
    boards = build_dashboards() if boards is None else boards
    return [
        VariableQuery(name, variable["name"], variable["query"])
        for name, board in boards.items()
        for variable in board["templating"]["list"]
        if variable["type"] == "query"
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--output-dir", type=Path, default=DASHBOARD_DIR, help="where to write the JSON files"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is out of date"
    )
    args = parser.parse_args(argv)
    output_dir: Path = args.output_dir
    stale = []
    for name, board in build_dashboards().items():
        path = output_dir / name
        content = render(board)
        if path.exists() and path.read_text(encoding="utf-8") == content:
            continue
        stale.append(path)
        if not args.check:
            output_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    for path in stale:
        verb = "out of date" if args.check else "wrote"
        print(f"{verb}: {path}", file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
