"""The bundled alerts: promtool and amtool accept them, and they agree with SPEC and the docs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, cast

import promql_parser
import yaml

from tests.conftest import require_tool

REPO = Path(__file__).resolve().parent.parent
ALERTS_DIR = REPO / "alerts"
RULES = ALERTS_DIR / "rules.yml"
THRESHOLDS = ALERTS_DIR / "thresholds.yml"
ALERTMANAGER_EXAMPLE = ALERTS_DIR / "alertmanager.example.yml"
RUNBOOKS = REPO / "docs" / "runbooks.md"
ALERTING_DOC = REPO / "docs" / "alerting.md"
METRICS_DOC = REPO / "docs" / "metrics.md"

RUNBOOK_BASE = "https://github.com/x-usage-exporter/x-usage-exporter/blob/main/docs/runbooks.md#"
SEVERITIES = {"critical", "warning", "info"}

# SPEC section 7: the alerts the bundle promises.
SPEC_ALERTS = (
    "XApiPostCapUsageHigh",
    "XApiPostCapProjectedExhaustion",
    "XApiBudgetProjectedOverrun",
    "XApiSpendingLimitNear",
    "XApiUsageCapped",
    "XApiUsageSpike",
    "XApiCreditsLow",
    "XApiUsageDataStale",
    "XApiUpstreamAuthFailure",
    "XApiExporterDown",
)

# Series the rules may use beside the documented exporter metrics.
PROMETHEUS_SERIES = {"up"}
THRESHOLD_PREFIX = "xapi:alert_threshold_"


def read_yaml(path: Path) -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load(path.read_text(encoding="utf-8")))


def rule_files() -> list[Path]:
    """alerts/*.yml except the Alertmanager example."""
    return sorted(path for path in ALERTS_DIR.glob("*.yml") if path != ALERTMANAGER_EXAMPLE)


def unit_test_files() -> list[Path]:
    return sorted((ALERTS_DIR / "tests").glob("*.yml"))


def alerting_rules() -> list[dict[str, Any]]:
    return [
        rule
        for group in read_yaml(RULES)["groups"]
        for rule in cast(list[dict[str, Any]], group["rules"])
        if "alert" in rule
    ]


def recording_rules() -> list[dict[str, Any]]:
    return [
        rule
        for group in read_yaml(THRESHOLDS)["groups"]
        for rule in cast(list[dict[str, Any]], group["rules"])
        if "record" in rule
    ]


def threshold_keys() -> list[str]:
    """`<key>` of every xapi:alert_threshold_<key>:<unit> rule."""
    return [
        str(rule["record"]).removeprefix(THRESHOLD_PREFIX).split(":")[0]
        for rule in recording_rules()
        if str(rule["record"]).startswith(THRESHOLD_PREFIX)
    ]


def selector_names(expr: str) -> set[str]:
    """Metric names of every selector in a PromQL expression."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def documented_metrics() -> set[str]:
    return set(re.findall(r"`(xapi_[a-z0-9_]+)", METRICS_DOC.read_text(encoding="utf-8")))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    text = RUNBOOKS.read_text(encoding="utf-8")
    return {github_anchor(match) for match in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=False, capture_output=True, text=True, cwd=REPO)


def relative(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(REPO)) for path in paths]


# --- external tools -----------------------------------------------------------------------


def test_rule_files_pass_promtool_check_without_warnings() -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "check", "rules", *relative(rule_files())])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("SUCCESS") == len(rule_files()), output
    assert "warning" not in output.lower(), output


def test_promtool_unit_tests_pass() -> None:
    promtool = require_tool("promtool")
    files = unit_test_files()
    assert files, "no promtool unit tests in alerts/tests/"
    result = run([promtool, "test", "rules", *relative(files)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "FAILED" not in output, output


def test_alertmanager_example_passes_amtool_check() -> None:
    amtool = require_tool("amtool")
    result = run([amtool, "check-config", str(ALERTMANAGER_EXAMPLE.relative_to(REPO))])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS" in output, output


def test_alertmanager_example_pages_critical_and_sends_warnings_to_chat() -> None:
    amtool = require_tool("amtool")
    expected = {"critical": "pager", "warning": "chat", "info": "chat"}
    for severity, receiver in expected.items():
        result = run(
            [
                amtool,
                "config",
                "routes",
                "test",
                f"--config.file={ALERTMANAGER_EXAMPLE.relative_to(REPO)}",
                "alertname=XApiUsageCapped",
                "project=production",
                f"severity={severity}",
            ]
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert result.stdout.split() == [receiver], output


# --- the rules against SPEC and the docs --------------------------------------------------


def test_every_spec_alert_is_defined() -> None:
    defined = {str(rule["alert"]) for rule in alerting_rules()}
    missing = [name for name in SPEC_ALERTS if name not in defined]
    assert not missing, f"SPEC section 7 alerts missing from rules.yml: {missing}"


def test_every_alert_has_severity_summary_description_runbook_and_for() -> None:
    problems: list[str] = []
    for rule in alerting_rules():
        name = rule["alert"]
        labels = cast(dict[str, str], rule.get("labels", {}))
        annotations = cast(dict[str, str], rule.get("annotations", {}))
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity {labels.get('severity')!r}")
        summary = annotations.get("summary", "")
        if not summary or "\n" in summary.strip():
            problems.append(f"{name}: summary must be one non-empty line")
        if not annotations.get("description", "").strip():
            problems.append(f"{name}: no description")
        if not annotations.get("runbook_url", "").startswith(RUNBOOK_BASE):
            problems.append(f"{name}: runbook_url must start with {RUNBOOK_BASE}")
        if not re.fullmatch(r"([0-9]+[smhd])+", str(rule.get("for", ""))):
            problems.append(f"{name}: no `for:` duration")
    assert not problems, "\n".join(problems)


def test_every_runbook_url_anchor_is_a_heading_of_the_runbooks() -> None:
    anchors = runbook_anchors()
    broken = {
        str(rule["alert"]): url
        for rule in alerting_rules()
        if (url := str(rule["annotations"]["runbook_url"]).removeprefix(RUNBOOK_BASE))
        not in anchors
    }
    assert not broken, f"runbook_url anchors without a heading in docs/runbooks.md: {broken}"


def test_every_alert_links_to_its_own_runbook_section() -> None:
    wrong = {
        str(rule["alert"]): str(rule["annotations"]["runbook_url"])
        for rule in alerting_rules()
        if str(rule["annotations"]["runbook_url"]).removeprefix(RUNBOOK_BASE)
        != github_anchor(str(rule["alert"]))
    }
    assert not wrong, f"runbook_url anchors that are not the alert's own section: {wrong}"


def test_every_metric_in_the_rules_is_documented() -> None:
    allowed = documented_metrics() | PROMETHEUS_SERIES
    recorded = {str(rule["record"]) for rule in recording_rules()}
    used: dict[str, set[str]] = {}
    for rule in alerting_rules():
        names = selector_names(str(rule["expr"]))
        # Template queries in annotations name series too.
        for text in cast(dict[str, str], rule["annotations"]).values():
            names |= set(re.findall(r"\bxapi_[a-z0-9_]+", text))
        used[str(rule["alert"])] = names
    for rule in recording_rules():
        used[str(rule["record"])] = selector_names(str(rule["expr"]))
    unknown = {
        owner: sorted(names - allowed - recorded)
        for owner, names in used.items()
        if names - allowed - recorded
    }
    assert not unknown, f"series not in docs/metrics.md: {unknown}"


def test_every_threshold_is_used_and_reported_when_missing() -> None:
    records = {str(rule["record"]) for rule in recording_rules()}
    thresholds = {name for name in records if name.startswith(THRESHOLD_PREFIX)}
    used: set[str] = set()
    for rule in alerting_rules():
        used |= selector_names(str(rule["expr"]))
    assert thresholds <= used, f"thresholds no alert uses: {sorted(thresholds - used)}"
    undefined = {name for name in used if ":" in name} - records
    assert not undefined, f"recording rules used by rules.yml but not defined: {sorted(undefined)}"
    (missing_rule,) = [r for r in alerting_rules() if r["alert"] == "XApiAlertThresholdsMissing"]
    watched = selector_names(str(missing_rule["expr"]))
    assert watched == thresholds, f"XApiAlertThresholdsMissing misses: {thresholds - watched}"
    for key in threshold_keys():
        assert f'"threshold", "{key}"' in str(missing_rule["expr"]), key


def test_thresholds_are_constants_named_by_scheme() -> None:
    for rule in recording_rules():
        name = str(rule["record"])
        if name == "xapi:alert_exporter_target:up":
            assert selector_names(str(rule["expr"])) == {"up"}
            continue
        assert re.fullmatch(r"xapi:alert_threshold_[a-z0-9_]+:[a-z]+", name), name
        assert re.fullmatch(r"vector\([0-9.]+\)", str(rule["expr"]).strip()), name


def test_docs_list_every_alert_and_threshold_key() -> None:
    text = ALERTING_DOC.read_text(encoding="utf-8")
    missing = [str(rule["alert"]) for rule in alerting_rules() if str(rule["alert"]) not in text]
    missing += [key for key in threshold_keys() if f"`{key}`" not in text]
    assert not missing, f"docs/alerting.md does not mention: {missing}"
    assert "## End-to-end detection latency" in text


# --- the unit tests cover every alert -----------------------------------------------------


def expected_alerts() -> list[tuple[str, list[dict[str, Any]]]]:
    """(alertname, exp_alerts) of every alert_rule_test in alerts/tests/."""
    cases: list[tuple[str, list[dict[str, Any]]]] = []
    for path in unit_test_files():
        for test in cast(list[dict[str, Any]], read_yaml(path)["tests"]):
            for case in cast(list[dict[str, Any]], test.get("alert_rule_test", [])):
                cases.append((str(case["alertname"]), list(case.get("exp_alerts") or [])))
    return cases


def test_every_alert_and_severity_has_a_unit_test_that_fires_it() -> None:
    fired = {
        (name, str(alert.get("exp_labels", {}).get("severity")))
        for name, alerts in expected_alerts()
        for alert in alerts
    }
    rules = {(str(rule["alert"]), str(rule["labels"]["severity"])) for rule in alerting_rules()}
    assert not rules - fired, f"alerts no unit test expects to fire: {sorted(rules - fired)}"


def test_every_alert_has_a_unit_test_that_expects_silence() -> None:
    silent = {name for name, alerts in expected_alerts() if not alerts}
    names = {str(rule["alert"]) for rule in alerting_rules()}
    assert not names - silent, f"alerts no unit test expects silent: {sorted(names - silent)}"


def test_firing_unit_tests_check_the_annotations() -> None:
    unchecked = sorted(
        {
            name
            for name, alerts in expected_alerts()
            for alert in alerts
            if not alert.get("exp_annotations", {}).get("description")
        }
    )
    assert not unchecked, f"firing cases without the expected description: {unchecked}"
