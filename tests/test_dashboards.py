"""The bundled Grafana dashboards: well-formed, generated, and querying only documented metrics."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import promql_parser
import pytest
from promql_parser import (
    AggregateExpr,
    BinaryExpr,
    Call,
    Expr,
    MatchOp,
    MatrixSelector,
    NumberLiteral,
    ParenExpr,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    VectorSelector,
)

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "grafana" / "generate.py"
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
METRICS_DOC = ROOT / "docs" / "metrics.md"
DASHBOARDS_DOC = ROOT / "docs" / "dashboards.md"

EXPECTED_UIDS = {
    "x-usage-overview.json": "xapi-usage-overview",
    "x-usage-exporter-health.json": "xapi-exporter-health",
}
DATASOURCE_REFERENCES = {"${datasource}", "$datasource"}
NOT_DOCUMENTED_BUT_ALLOWED = {"up"}
# Series without a `project` label: the scrape's own `up` and the exporter's process-wide gauges.
PROCESS_WIDE = {
    "up",
    "xapi_exporter_build_info",
    "xapi_exporter_poll_interval_seconds",
    "xapi_exporter_config_last_reload_successful",
    "xapi_exporter_config_last_reload_success_timestamp_seconds",
    "xapi_exporter_history_file_load_success",
    "xapi_exporter_history_file_write_success",
    "xapi_exporter_history_file_last_write_timestamp_seconds",
}
# Documented metrics that no panel needs to show, and why.
NOT_ON_A_PANEL = {
    "xapi_project_info",  # feeds the `project` variable
    "xapi_project_cap_reset_day",  # the raw API value; the cycle start/end panels show its meaning
    # times XApiUsageDataStale for a project that never succeeded; "Data age" says the rest
    "xapi_exporter_project_configured_timestamp_seconds",
}

# PromQL functions and aggregations of Prometheus 2.42 that need no feature flag. The native
# histogram functions (histogram_count, ...) exist there but only for an experimental feature.
STABLE_FUNCTIONS = {
    *("abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh"),
    *("avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh"),
    *("count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg"),
    *("delta", "deriv", "exp", "floor", "histogram_quantile", "holt_winters", "hour", "idelta"),
    *("increase", "irate", "label_join", "label_replace", "last_over_time", "ln", "log10"),
    *("log2", "max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear"),
    *("present_over_time", "quantile_over_time", "rad", "rate", "resets", "round", "scalar"),
    *("sgn", "sin", "sinh", "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time"),
    *("sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year"),
}
STABLE_AGGREGATIONS = {
    *("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"),
    *("bottomk", "topk", "quantile"),
}

# Distinctive stand-ins, so a test can tell that a matcher came from the dashboard variable.
JOB_MARKER = "job-variable"
PROJECT_MARKER = "project-variable"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("x_usage_grafana_generate", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


# --- helpers ------------------------------------------------------------------------------------


@cache
def committed_dashboards() -> dict[str, dict[str, Any]]:
    """Every JSON file in grafana/dashboards/, parsed."""
    boards: dict[str, dict[str, Any]] = {}
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(board, dict), f"{path.name}: not a JSON object"
        boards[path.name] = board
    return boards


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def data_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (panel for panel in panels(board) if panel.get("type") not in {"row", "text"})


def expand(expr: str) -> str:
    values = dict(generate.SAMPLE_VARIABLES)
    values.update(job=JOB_MARKER, project=PROJECT_MARKER)
    expanded: str = generate.expand_variables(expr, values)
    return expanded


def all_queries() -> list[tuple[str, str, str]]:
    """(file, panel title, expr) of every panel target in the committed dashboards."""
    return [
        (name, panel.get("title", ""), target["expr"])
        for name, board in committed_dashboards().items()
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]


def label_values_expr(query: str) -> str | None:
    """The series selector of `label_values(<expr>, <label>)`; None for `label_values(<label>)`."""
    match = re.fullmatch(r"\s*label_values\((?P<expr>.+),\s*(?P<label>\w+)\s*\)\s*", query)
    if match:
        return match["expr"]
    assert re.fullmatch(r"\s*label_values\(\s*\w+\s*\)\s*", query), f"unsupported: {query!r}"
    return None


def all_variable_queries() -> list[tuple[str, str, str]]:
    """(file, variable name, PromQL inside label_values) of every query variable."""
    found = []
    for name, board in committed_dashboards().items():
        for variable in board["templating"]["list"]:
            if variable["type"] != "query":
                continue
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            expr = label_values_expr(text)
            if expr is not None:
                found.append((name, variable["name"], expr))
    return found


def children(node: Expr) -> list[Expr]:
    """The sub-expressions of a PromQL node; an unknown node kind fails instead of hiding names."""
    if isinstance(node, VectorSelector | NumberLiteral | StringLiteral):
        return []
    if isinstance(node, MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, AggregateExpr):
        return [node.expr, *([node.param] if isinstance(node.param, Expr) else [])]
    if isinstance(node, BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, Call):
        assert all(isinstance(arg, Expr) for arg in node.args), node.args
        return list(node.args)
    if isinstance(node, ParenExpr | UnaryExpr | SubqueryExpr):
        return [node.expr]
    raise AssertionError(f"unknown PromQL node {type(node).__name__}")


def walk(node: Expr) -> Iterator[Expr]:
    yield node
    for child in children(node):
        yield from walk(child)


def selectors(expr: str) -> list[VectorSelector]:
    tree = promql_parser.parse(expand(expr))
    return [node for node in walk(tree) if isinstance(node, VectorSelector)]


def metric_name(node: VectorSelector) -> str:
    """The one metric a selector names, by `name` or by an exact `__name__` matcher."""
    assert not node.matchers.or_matchers, f"selector with `or` matchers: {node}"
    names = {node.name} if node.name else set()
    for matcher in node.matchers.matchers:
        if matcher.name == "__name__":
            assert matcher.op == MatchOp.Equal, f"metric name chosen by pattern: {node}"
            names.add(matcher.value)
    assert len(names) == 1, f"selector must name exactly one metric: {node}"
    return names.pop()


def metric_names(expr: str) -> set[str]:
    return {metric_name(node) for node in selectors(expr)}


def unstable_functions(expr: str) -> set[str]:
    """Functions and aggregations outside the flag-free PromQL of Prometheus 2.42."""
    found = set()
    for node in walk(promql_parser.parse(expand(expr))):
        if isinstance(node, Call) and (
            node.func.experimental or node.func.name not in STABLE_FUNCTIONS
        ):
            found.add(node.func.name)
        if isinstance(node, AggregateExpr) and str(node.op) not in STABLE_AGGREGATIONS:
            found.add(str(node.op))
    return found


@cache
def documented_metrics() -> frozenset[str]:
    """Metric names in docs/metrics.md: the first column of its tables, and any `xapi_...` code
    span in its prose (optionally with labels, as in `xapi_name{project,field}`)."""
    names = set()
    for line in METRICS_DOC.read_text(encoding="utf-8").splitlines():
        cells = line.split("|")
        first_column = cells[1] if line.startswith("|") and len(cells) >= 3 else ""
        for code in re.findall(r"`([^`]+)`", line):
            match = re.fullmatch(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{[\w,=\"\s]*\})?", code)
            if match and (match["name"].startswith("xapi_") or f"`{code}`" in first_column):
                names.add(match["name"])
    return frozenset(names)


def rectangles_overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


# --- the files ----------------------------------------------------------------------------------


def test_each_expected_dashboard_is_committed_with_its_stable_uid() -> None:
    uids = {name: board.get("uid") for name, board in committed_dashboards().items()}
    assert uids == EXPECTED_UIDS


def test_every_dashboard_has_a_title_tags_and_a_current_schema() -> None:
    for name, board in committed_dashboards().items():
        assert isinstance(board.get("title"), str) and board["title"].strip(), name
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"]), name
        assert {"x-api", "x-usage-exporter"} <= set(board["tags"]), name
        assert board["editable"] is True, name
        assert 36 <= board["schemaVersion"] <= 41, name


def test_dashboard_uids_are_unique() -> None:
    uids = [board["uid"] for board in committed_dashboards().values()]
    assert len(uids) == len(set(uids))


def test_overview_defaults_to_the_last_seven_days() -> None:
    overview = committed_dashboards()["x-usage-overview.json"]
    assert overview["time"] == {"from": "now-7d", "to": "now"}


def test_committed_json_equals_generator_output() -> None:
    generated = generate.build_dashboards()
    assert set(generated) == set(committed_dashboards()), "stray or missing dashboard files"
    for name, board in generated.items():
        committed = (DASHBOARD_DIR / name).read_text(encoding="utf-8")
        assert committed == generate.render(board), (
            f"{name} is out of date: run `python grafana/generate.py`"
        )


def test_generator_writes_files_and_its_check_mode_spots_a_stale_one(tmp_path: Path) -> None:
    assert generate.main(["--output-dir", str(tmp_path)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(EXPECTED_UIDS)
    assert generate.main(["--output-dir", str(tmp_path), "--check"]) == 0
    overview = tmp_path / "x-usage-overview.json"
    overview.write_text(overview.read_text(encoding="utf-8") + " ", encoding="utf-8")
    assert generate.main(["--output-dir", str(tmp_path), "--check"]) == 1


# --- variables ----------------------------------------------------------------------------------


def test_every_dashboard_has_datasource_job_and_project_variables() -> None:
    for name, board in committed_dashboards().items():
        variables = {variable["name"]: variable for variable in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", name
        assert variables["datasource"]["query"] == "prometheus", name
        for query_variable in ("job", "project"):
            variable = variables[query_variable]
            assert variable["type"] == "query", name
            assert variable["datasource"]["uid"] in DATASOURCE_REFERENCES, name
            assert variable["multi"] is True and variable["includeAll"] is True, name
        assert 'job=~"$job"' in variables["project"]["query"], name


def test_variable_queries_parse_and_name_documented_metrics() -> None:
    queries = all_variable_queries()
    assert len(queries) == 2 * len(EXPECTED_UIDS)
    for name, variable, expr in queries:
        names = metric_names(expr)
        assert names, f"{name} ${variable}: no metric in {expr!r}"
        assert names <= documented_metrics(), f"{name} ${variable}: {names}"


# --- panels -------------------------------------------------------------------------------------


def test_panel_ids_are_unique_integers_within_each_dashboard() -> None:
    for name, board in committed_dashboards().items():
        ids = [panel["id"] for panel in panels(board)]
        assert all(isinstance(pid, int) for pid in ids), name
        assert len(ids) == len(set(ids)), name


def test_panels_fit_the_grid_without_overlapping() -> None:
    for name, board in committed_dashboards().items():
        positions = [(panel["title"], panel["gridPos"]) for panel in panels(board)]
        for title, pos in positions:
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (name, title)
        for index, (title, pos) in enumerate(positions):
            for other_title, other in positions[index + 1 :]:
                assert not rectangles_overlap(pos, other), (name, title, other_title)


def test_every_panel_has_a_unit() -> None:
    for name, board in committed_dashboards().items():
        for panel in panels(board):
            if panel["type"] == "row":
                continue
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
            assert isinstance(unit, str) and unit, f"{name}: {panel['title']!r} has no unit"


def test_every_data_panel_queries_the_datasource_variable() -> None:
    for name, board in committed_dashboards().items():
        for panel in data_panels(board):
            where = f"{name}: {panel['title']!r}"
            assert panel.get("targets"), f"{where} has no query"
            assert panel["datasource"]["type"] == "prometheus", where
            assert panel["datasource"]["uid"] in DATASOURCE_REFERENCES, where
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in DATASOURCE_REFERENCES, where
                assert target["expr"].strip(), where
        for panel in panels(board):
            if panel["type"] in {"row", "text"}:
                assert not panel.get("targets"), f"{name}: {panel['title']!r}"


def test_every_panel_query_parses_as_promql() -> None:
    queries = all_queries()
    assert queries
    for name, title, expr in queries:
        try:
            promql_parser.parse(expand(expr))
        except ValueError as error:
            pytest.fail(f"{name}: {title!r}: {expr!r} does not parse: {error}")


def test_panel_queries_name_only_documented_metrics_or_up() -> None:
    allowed = documented_metrics() | NOT_DOCUMENTED_BUT_ALLOWED
    for name, title, expr in all_queries():
        names = metric_names(expr)
        assert names, f"{name}: {title!r} queries no metric"
        assert names <= allowed, f"{name}: {title!r} uses {sorted(names - allowed)}"


def test_every_documented_metric_is_on_a_dashboard() -> None:
    shown = {name for _, _, expr in all_queries() for name in metric_names(expr)}
    missing = documented_metrics() - shown - NOT_ON_A_PANEL
    assert not missing, f"documented but on no panel: {sorted(missing)}"


def test_panel_queries_use_only_flag_free_prometheus_2_42_functions() -> None:
    for name, title, expr in all_queries():
        assert not unstable_functions(expr), f"{name}: {title!r}: {expr!r}"


def test_every_selector_filters_by_the_job_and_project_variables() -> None:
    for name, title, expr in all_queries():
        for node in selectors(expr):
            matchers = [(m.name, m.op, m.value) for m in node.matchers.matchers]
            where = f"{name}: {title!r}: {node}"
            assert ("job", MatchOp.Re, JOB_MARKER) in matchers, where
            if metric_name(node) not in PROCESS_WIDE:
                assert ("project", MatchOp.Re, PROJECT_MARKER) in matchers, where


def test_every_panel_is_described_in_the_docs() -> None:
    docs = DASHBOARDS_DOC.read_text(encoding="utf-8")
    for name, board in committed_dashboards().items():
        assert board["title"] in docs, name
        for panel in panels(board):
            if panel["type"] != "row":
                assert panel["title"] in docs, f"{name}: {panel['title']!r} is not in the docs"
                assert panel["type"] == "text" or panel.get("description"), panel["title"]


# --- the helpers these tests and the end-to-end tests rely on -----------------------------------


def test_panel_queries_helper_lists_every_target_of_every_dashboard() -> None:
    listed = {(q.dashboard, q.panel, q.expr) for q in generate.panel_queries()}
    assert listed == set(all_queries())
    assert len(generate.panel_queries()) == len(all_queries())


def test_expand_variables_replaces_every_form_and_rejects_unknown_names() -> None:
    values = {"job": "j", "project": "p", "__rate_interval": "1m"}
    expr = 'rate(x{job=~"$job", project=~"${project}", a=~"${project:regex}"}[$__rate_interval])'
    assert generate.expand_variables(expr, values) == (
        'rate(x{job=~"j", project=~"p", a=~"p"}[1m])'
    )
    with pytest.raises(KeyError, match="nope"):
        generate.expand_variables("x[$nope]", values)


def test_metric_names_are_found_behind_functions_operators_and_name_matchers() -> None:
    expr = (
        'sum by (a) (rate(a_total[5m])) / on () group_left {__name__="b"}'
        " + topk(3, c) or absent(d offset 1h) and max_over_time((e * 2)[1d:5m]) unless -f"
    )
    assert metric_names(expr) == {"a_total", "b", "c", "d", "e", "f"}
    with pytest.raises(AssertionError, match="pattern"):
        metric_names('{__name__=~"xapi_.+"}')


def test_unstable_functions_are_reported() -> None:
    assert unstable_functions("histogram_count(x)") == {"histogram_count"}
    assert unstable_functions("clamp_min(x - time(), 0) or topk(1, y)") == set()


def test_documented_metrics_are_read_from_the_metrics_tables() -> None:
    names = documented_metrics()
    assert {"xapi_project_info", "xapi_exporter_build_info"} <= names
    assert {"xapi_project_posts_projected_lower", "xapi_project_posts_projected_upper"} <= names
    assert "metric" not in names and "project" not in names and "reason" not in names
    assert "xapi_exporter_response_missing_field" in names  # named in prose, with labels
