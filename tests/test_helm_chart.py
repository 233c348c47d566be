"""The Helm chart, rendered and linted by real Helm (helm-python-sdk), checked object by object."""

from __future__ import annotations

import base64
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.conftest import require_tool

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "x-usage-exporter"
RELEASE = "xue"
NAMESPACE = "monitoring"
UID = 65532
# The chart's kubeVersion floor, and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
THRESHOLD_RECORD = re.compile(r"^xapi:alert_threshold_(?P<key>.+):[a-z_]+$")
VECTOR = re.compile(r"^\s*vector\((?P<number>[^)]*)\)\s*$")
DURATION = re.compile(r"^([0-9]+(ms|[smhdwy]))+$")

Values = dict[str, Any]
Manifest = dict[str, Any]


def _ci_values() -> list[tuple[str, Values]]:
    return [
        (path.name, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        for path in sorted((CHART / "ci").glob("*.yaml"))
    ]


CI_VALUES = _ci_values()
VALUE_SETS = [("defaults", {}), *CI_VALUES]
VALUE_SET_IDS = [name for name, _ in VALUE_SETS]


def ci(name: str) -> Values:
    return dict(CI_VALUES)[name]


def render(values: Values | None = None) -> dict[str, str]:
    with helm_python.Chart.load(CHART) as chart:
        return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)


def manifests(values: Values | None = None) -> list[Manifest]:
    found: list[Manifest] = []
    for path, text in render(values).items():
        if path.endswith(".yaml"):
            found.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return found


def one(objects: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    matching = [
        obj
        for obj in objects
        if obj["kind"] == kind and obj["metadata"]["name"].endswith(name_suffix)
    ]
    assert len(matching) == 1, f"expected one {kind}*{name_suffix}, got {len(matching)}"
    return matching[0]


def container(objects: list[Manifest]) -> Manifest:
    containers: list[Manifest] = one(objects, "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert len(containers) == 1
    return containers[0]


def exporter_config_map(objects: list[Manifest]) -> Manifest:
    """The ConfigMap holding the exporter's config file (not the dashboards')."""
    matching = [o for o in objects if o["kind"] == "ConfigMap" and "config.yml" in o["data"]]
    assert len(matching) == 1
    return matching[0]


def config_file(objects: list[Manifest]) -> Any:
    return yaml.safe_load(exporter_config_map(objects)["data"]["config.yml"])


def with_prometheus_rule(values: Values | None = None) -> Values:
    merged = dict(values or {})
    merged["prometheusRule"] = {**merged.get("prometheusRule", {}), "enabled": True}
    return merged


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_sources() -> list[Path]:
    """The rule files the chart carries: alerts/*.yml but not the Alertmanager example."""
    return sorted(
        path for path in (REPO / "alerts").glob("*.yml") if "alertmanager" not in path.name
    )


def dashboard_sources() -> list[Path]:
    return sorted((REPO / "grafana" / "dashboards").glob("*.json"))


def group(rule: Manifest, name: str) -> Manifest:
    groups: list[Manifest] = [g for g in rule["spec"]["groups"] if g["name"] == name]
    assert len(groups) == 1, f"expected one group {name}"
    return groups[0]


def threshold_number(expr: str) -> float:
    match = VECTOR.match(expr)
    assert match, f"not a constant threshold: {expr!r}"
    return float(match["number"])


def file_thresholds() -> dict[str, float]:
    """Threshold defaults of alerts/thresholds.yml by Helm values key."""
    found: dict[str, float] = {}
    for file_group in read_yaml(REPO / "alerts" / "thresholds.yml")["groups"]:
        for rule in file_group["rules"]:
            match = THRESHOLD_RECORD.match(rule.get("record", ""))
            if match:
                found[match["key"]] = threshold_number(rule["expr"])
    return found


def walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from walk_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_strings(item)


def check_keys(mapping: Any, allowed: set[str], where: str) -> None:
    assert isinstance(mapping, dict), f"{where}: not a mapping"
    unknown = set(mapping) - allowed
    assert not unknown, f"{where}: unknown keys {sorted(unknown)}"


def check_crd_object(obj: Manifest) -> None:
    """kubernetes-validate has no schema for the Prometheus Operator's CRDs: check their shape."""
    check_keys(obj, {"apiVersion", "kind", "metadata", "spec"}, obj["kind"])
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    check_keys(obj["metadata"], {"name", "namespace", "labels", "annotations"}, "metadata")
    for label in obj["metadata"].get("labels", {}).values():
        assert isinstance(label, str)
    spec = obj["spec"]
    if obj["kind"] == "ServiceMonitor":
        check_keys(spec, {"jobLabel", "namespaceSelector", "selector", "endpoints"}, "spec")
        assert spec["selector"]["matchLabels"]
        endpoint_keys = {
            "port", "path", "scheme", "interval", "scrapeTimeout", "tlsConfig", "basicAuth",
            "relabelings", "metricRelabelings",
        }  # fmt: skip
        for endpoint in spec["endpoints"]:
            check_keys(endpoint, endpoint_keys, "endpoint")
            assert endpoint["scheme"] in {"http", "https"}
            assert DURATION.match(endpoint["interval"])
            assert DURATION.match(endpoint["scrapeTimeout"])
    else:
        check_keys(spec, {"groups"}, "spec")
        for rule_group in spec["groups"]:
            check_keys(rule_group, {"name", "interval", "limit", "rules"}, "group")
            for rule in rule_group["rules"]:
                check_keys(
                    rule,
                    {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"},
                    f"rule in {rule_group['name']}",
                )
                assert ("alert" in rule) != ("record" in rule)
                assert isinstance(rule["expr"], str)
                for text in walk_strings([rule.get("labels", {}), rule.get("annotations", {})]):
                    assert isinstance(text, str)


# --- renders, lints, validates ---------------------------------------------------------------


@pytest.mark.parametrize("values", [v for _, v in VALUE_SETS], ids=VALUE_SET_IDS)
def test_chart_renders_and_lints_without_errors_or_warnings(values: Values) -> None:
    assert one(manifests(values), "Deployment")
    for strict in (False, True):
        report = helm_python.lint(CHART, values, strict=strict, namespace=NAMESPACE)
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", [v for _, v in VALUE_SETS], ids=VALUE_SET_IDS)
def test_rendered_objects_validate_against_kubernetes_schemas(values: Values) -> None:
    for obj in manifests(values):
        if obj["kind"] in CRD_KINDS:
            check_crd_object(obj)
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_ci_values_files_cover_the_documented_cases() -> None:
    names = set(dict(CI_VALUES))
    assert {
        "minimal-values.yaml",
        "existing-secret-values.yaml",
        "all-enabled-values.yaml",
        "demo-values.yaml",
    } <= names


def test_crd_objects_and_optional_parts_are_absent_with_default_values() -> None:
    kinds = {obj["kind"] for obj in manifests()}
    assert kinds == {"Deployment", "Service", "ServiceAccount", "ConfigMap"}


def test_everything_enabled_renders_every_optional_object() -> None:
    objects = manifests(ci("all-enabled-values.yaml"))
    for kind in ("ServiceMonitor", "PrometheusRule", "NetworkPolicy"):
        assert one(objects, kind)
    assert one(objects, "ConfigMap", "-dashboards")
    assert one(objects, "Secret", "-web-config")


# --- values documentation and schema ---------------------------------------------------------


def values_documentation() -> tuple[list[str], list[str]]:
    """(keys with a `# --` comment, keys with none and no documented parent) of values.yaml."""
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    documented: list[str] = []
    undocumented: list[str] = []
    stack: list[tuple[int, str, bool]] = []  # indent, key, documented
    pending = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending = pending or stripped.startswith("# --")
            continue
        match = re.match(r"^(\s*)([A-Za-z_][\w.-]*):(.*)$", line)
        if not match:
            continue
        indent = len(match[1])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([key for _, key, _ in stack] + [match[2]])
        if pending:
            documented.append(path)
        elif match[3].strip() and not any(doc for _, _, doc in stack):
            undocumented.append(path)
        stack.append((indent, match[2], pending))
        pending = False
    return documented, undocumented


def test_every_value_is_documented_and_listed_in_the_readme() -> None:
    documented, undocumented = values_documentation()
    assert undocumented == []
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    missing = [key for key in documented if f"| {key} |" not in readme]
    assert missing == [], "README values table is missing keys"


@pytest.mark.parametrize(
    "values",
    [
        {"serviceMonitr": {"enabled": True}},
        {"serviceMonitor": {"enabeld": True}},
        {"prometheusRule": {"thresholds": {"cap_utilisation_warning": 0.5}}},
        {"projects": [{"name": "p", "bearer_token": "inline"}]},
        {"config": {"poll_interval": "five minutes"}},
        {"config": {"credits": "sometimes"}},
    ],
    ids=["top-level", "nested", "threshold", "project", "duration", "enum"],
)
def test_schema_rejects_a_misspelt_key_or_bad_value(values: Values) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render(values)
    assert helm_python.lint(CHART, values)["errors"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"projects": [{"name": "p"}]}, "no token"),
        ({"projects": [{"name": "p"}], "tokens": {"q": "t"}}, "tokens.p: missing"),
        ({"projects": [{"name": "p"}], "tokens": {"p": "t", "q": "t"}}, "tokens.q: no project"),
        ({"projects": [{"name": "a b"}], "existingSecret": "s"}, "set secretKey"),
        ({"projects": [{"name": "p"}, {"name": "p"}], "existingSecret": "s"}, "duplicate"),
        ({"projects": [{"name": "p"}], "existingSecret": "s", "tokens": {"p": "t"}}, "both"),
        ({"webConfig": {"enabled": True}}, "webConfig"),
    ],
    ids=["no-token", "missing", "unused", "bad-key", "duplicate", "both", "web-config"],
)
def test_inconsistent_values_fail_the_render_with_a_clear_message(
    values: Values, message: str
) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(values)


# --- pod -----------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [v for _, v in VALUE_SETS], ids=VALUE_SET_IDS)
def test_pod_and_container_security_contexts_are_hardened(values: Values) -> None:
    objects = manifests(values)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    context = container(objects)["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == UID
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False


def _mebibytes(quantity: str) -> float:
    assert quantity.endswith("Mi"), quantity
    return float(quantity.removesuffix("Mi"))


def test_resources_default_to_the_measured_footprint_with_headroom() -> None:
    """The requests cover the largest resident memory measured in docs/performance.md (100
    projects) with 20% to spare, and the limit leaves twice the request."""
    resources = container(manifests())["resources"]
    assert set(resources) == {"requests", "limits"}
    table = (REPO / "docs" / "performance.md").read_text(encoding="utf-8")
    measured = [
        float(after)
        for after in re.findall(r"^\| \d+ \| \d+ \| [\d.]+ \| ([\d.]+) \| [\d.]+ \|$", table, re.M)
    ]
    assert len(measured) >= 3
    request = _mebibytes(resources["requests"]["memory"])
    assert request >= 1.2 * max(measured)
    assert _mebibytes(resources["limits"]["memory"]) >= 2 * request
    assert resources["requests"]["cpu"] == "10m" and resources["limits"]["cpu"] == "500m"
    # Helm merges maps: null removes a default (`--set resources.limits.cpu=null`, or all of them)
    trimmed = container(manifests({"resources": {"limits": {"cpu": None}}}))["resources"]
    assert trimmed["limits"] == {"memory": resources["limits"]["memory"]}
    assert "resources" not in container(manifests({"resources": None}))


def _set(*expressions: str) -> Values:
    """Values as `helm install --set a=b,c=d` makes them, parsed by Helm's own strvals."""
    parsed: Values = helm_python.parse_set_string(",".join(expressions))
    return parsed


def test_decimals_given_with_set_are_accepted_and_rendered_as_numbers(tmp_path: Path) -> None:
    from exporter.config import load_config

    values = _set(
        "existingSecret=x-api-tokens",
        "projects[0].name=production",
        "projects[0].budget_usd=399.50",
        "projects[0].spending_limit_usd=800",
        "config.pricing.post_read_usd=0.004",
        "prometheusRule.enabled=true",
        "prometheusRule.thresholds.cap_utilization_warning=0.7",
    )
    assert values["projects"][0]["budget_usd"] == "399.50"  # what --set hands to the schema
    assert values["config"]["pricing"]["post_read_usd"] == "0.004"
    objects = manifests(values)
    config = config_file(objects)
    assert config["projects"][0]["budget_usd"] == 399.5
    assert config["projects"][0]["spending_limit_usd"] == 800
    assert config["pricing"]["post_read_usd"] == 0.004
    (tmp_path / "production").write_text("a-token\n", encoding="utf-8")
    config["projects"][0]["bearer_token_file"] = str(tmp_path / "production")
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    loaded = load_config(str(tmp_path / "config.yml"), environ={})
    assert loaded.projects[0].budget_usd == 399.5 and loaded.pricing.post_read_usd == 0.004
    rules = [r for g in one(objects, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    (warning,) = [
        r for r in rules if r.get("record", "").startswith("xapi:alert_threshold_cap_utilization_w")
    ]
    assert warning["expr"] == "vector(0.7)"
    assert not helm_python.lint(CHART, values)["errors"]


@pytest.mark.parametrize(
    "expression",
    [
        "projects[0].budget_usd=lots",
        "projects[0].budget_usd=0",
        "projects[0].budget_usd=0.00",
        "projects[0].budget_usd=-5",
        "config.pricing.post_read_usd=-0.1",
        "config.pricing.post_read_usd=1e3",
        "prometheusRule.thresholds.cap_utilization_warning=high",
    ],
)
def test_set_strings_that_are_not_decimals_in_range_are_refused(expression: str) -> None:
    values = _set("existingSecret=s", "projects[0].name=p", expression)
    with pytest.raises(helm_python.HelmValuesError):
        render(values)


@pytest.mark.parametrize("values", [v for _, v in VALUE_SETS], ids=VALUE_SET_IDS)
def test_probes_use_healthy_and_ready_endpoints_never_metrics(values: Values) -> None:
    exporter = container(manifests(values))
    probes = [exporter["livenessProbe"], exporter["readinessProbe"]]
    for probe in probes:
        assert "/metrics" not in str(probe)
    if not (values.get("livenessProbe") or values.get("readinessProbe")):
        assert exporter["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
        assert exporter["readinessProbe"]["httpGet"]["path"] == "/-/ready"
        for probe in probes:
            assert probe["httpGet"]["port"] == "http"


def test_args_listen_on_the_fixed_port_and_pass_log_settings() -> None:
    exporter = container(manifests(ci("existing-secret-values.yaml")))
    assert exporter["args"] == [
        "--config.file=/etc/x-usage-exporter/config.yml",
        "--web.listen-address=:9879",
        "--log.level=debug",
        "--log.format=json",
        "--history.file=/var/lib/x-usage-exporter/history.json",
    ]
    assert exporter["ports"] == [{"name": "http", "containerPort": 9879, "protocol": "TCP"}]


def _volume(objects: list[Manifest], name: str) -> dict[str, Any] | None:
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    volumes = deployment["spec"]["template"]["spec"].get("volumes", [])
    return next((v for v in volumes if v["name"] == name), None)


def test_the_history_file_is_on_an_empty_dir_or_a_claim_and_can_be_left_out() -> None:
    values = ci("minimal-values.yaml")
    mount = {"name": "history", "mountPath": "/var/lib/x-usage-exporter"}
    objects = manifests(values)
    assert mount in container(objects)["volumeMounts"]
    assert _volume(objects, "history") == {"name": "history", "emptyDir": {"sizeLimit": "64Mi"}}
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert "strategy" not in deployment["spec"]

    claimed = manifests(values | {"history": {"existingClaim": "xue-history"}})
    assert _volume(claimed, "history") == {
        "name": "history",
        "persistentVolumeClaim": {"claimName": "xue-history"},
    }
    deployment = next(o for o in claimed if o["kind"] == "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one pod holds the claim

    off = manifests(values | {"history": {"enabled": False}})
    assert _volume(off, "history") is None
    assert not any(a.startswith("--history.file") for a in container(off)["args"])


def test_config_checksum_changes_when_config_values_change() -> None:
    def checksum(values: Values) -> str:
        deployment = one(manifests(values), "Deployment")
        annotation: str = deployment["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]
        return annotation

    base = ci("minimal-values.yaml")
    assert checksum(base) == checksum(base)
    assert checksum(base) != checksum({**base, "config": {"poll_interval": "10m"}})
    assert checksum(base) != checksum(
        {**base, "projects": [{**base["projects"][0], "budget_usd": 500}]}
    )


def test_secret_checksum_is_set_only_when_the_chart_creates_the_secret() -> None:
    def annotations(values: Values) -> dict[str, str]:
        found: dict[str, str] = one(manifests(values), "Deployment")["spec"]["template"][
            "metadata"
        ]["annotations"]
        return found

    minimal = ci("minimal-values.yaml")
    assert "checksum/secret" in annotations(minimal)
    rotated = {**minimal, "tokens": {"production": "another-token"}}
    assert annotations(rotated)["checksum/secret"] != annotations(minimal)["checksum/secret"]
    assert "checksum/secret" not in annotations(ci("existing-secret-values.yaml"))


# --- config and tokens ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["minimal-values.yaml", "existing-secret-values.yaml", "all-enabled-values.yaml"]
)
def test_config_holds_no_token_and_points_at_mounted_secret_keys(name: str) -> None:
    values = ci(name)
    objects = manifests(values)
    text = exporter_config_map(objects)["data"]["config.yml"]
    for token in values.get("tokens", {}).values():
        assert token not in text
    config = yaml.safe_load(text)

    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    mount = next(m for m in container(objects)["volumeMounts"] if m["name"] == "tokens")
    assert "subPath" not in mount, "a subPath mount never sees a rotated Secret"
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == "tokens")["secret"]
    mounted = {f"{mount['mountPath']}/{item['path']}": item["key"] for item in volume["items"]}
    expected_secret = values.get("existingSecret") or f"{RELEASE}-x-usage-exporter-tokens"
    assert volume["secretName"] == expected_secret

    assert [p["name"] for p in config["projects"]] == [p["name"] for p in values["projects"]]
    for project in config["projects"]:
        assert set(project) <= {"name", "bearer_token_file", "budget_usd", "spending_limit_usd"}
        assert project["bearer_token_file"] in mounted
    if not values.get("existingSecret"):
        secret = one(objects, "Secret", "-tokens")
        assert set(mounted.values()) == set(secret["data"])
        for key, token in values["tokens"].items():
            assert base64.b64decode(secret["data"][key]).decode() == token


def test_rendered_config_is_accepted_by_the_exporter(tmp_path: Path) -> None:
    from exporter.config import load_config

    for name in ("minimal-values.yaml", "existing-secret-values.yaml"):
        config = config_file(manifests(ci(name)))
        for project in config["projects"]:
            token = tmp_path / Path(project["bearer_token_file"]).name
            token.write_text("a-token\n", encoding="utf-8")
            project["bearer_token_file"] = str(token)
        path = tmp_path / f"{name}.config.yml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        loaded = load_config(str(path), environ={})
        assert [p.name for p in loaded.projects] == [p["name"] for p in ci(name)["projects"]]


def test_credits_off_reaches_the_exporter_as_the_word_not_a_boolean() -> None:
    base = ci("existing-secret-values.yaml")
    for credits in ("off", False):
        values = {**base, "config": {**base["config"], "credits": credits}}
        assert config_file(manifests(values))["credits"] == "off"


def test_token_secret_is_created_only_from_values_tokens() -> None:
    assert one(manifests(ci("minimal-values.yaml")), "Secret", "-tokens")
    for name in ("existing-secret-values.yaml", "demo-values.yaml"):
        assert [o for o in manifests(ci(name)) if o["kind"] == "Secret"] == []


def test_demo_mode_passes_demo_and_mounts_no_config_nor_token() -> None:
    objects = manifests(ci("demo-values.yaml"))
    exporter = container(objects)
    assert "--demo" in exporter["args"]
    assert not any(arg.startswith("--config.file") for arg in exporter["args"])
    assert "volumeMounts" not in exporter
    assert [o for o in objects if o["kind"] == "ConfigMap"] == []


def test_web_config_switches_probes_and_scrapes_to_https() -> None:
    objects = manifests(ci("all-enabled-values.yaml"))
    exporter = container(objects)
    assert "--web.config.file=/etc/x-usage-exporter/web-config.yml" in exporter["args"]
    assert one(objects, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "https"
    secret = one(objects, "Secret", "-web-config")
    web_config = yaml.safe_load(base64.b64decode(secret["data"]["web-config.yml"]))
    assert web_config == ci("all-enabled-values.yaml")["webConfig"]["config"]
    default_probe = container(
        manifests({"webConfig": {"enabled": True, "tls": True, "existingSecret": "web"}})
    )
    assert default_probe["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_service_monitor_selects_the_service_and_its_port() -> None:
    objects = manifests(ci("all-enabled-values.yaml"))
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # job="x-usage-exporter" in every release, which XApiExporterDown's job regex matches.
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert re.fullmatch(".*x-usage-exporter.*", job)


def test_network_policy_admits_the_metrics_port_and_lets_out_dns_and_https_only() -> None:
    policy = one(manifests(ci("all-enabled-values.yaml")), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == ["http"]
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP")}


# --- alerts --------------------------------------------------------------------------------


def test_prometheus_rule_carries_the_alert_files_unchanged_with_default_values() -> None:
    rule = one(manifests(with_prometheus_rule()), "PrometheusRule")
    expected = [
        rule_group
        for path in (REPO / "alerts" / "rules.yml", REPO / "alerts" / "thresholds.yml")
        for rule_group in read_yaml(path)["groups"]
    ]
    assert rule["spec"]["groups"] == expected
    assert group(rule, "x-usage-exporter") == read_yaml(REPO / "alerts" / "rules.yml")["groups"][0]
    check_crd_object(rule)


def test_alert_templates_reach_prometheus_unevaluated() -> None:
    rule = one(manifests(with_prometheus_rule()), "PrometheusRule")
    annotations = [r.get("annotations", {}) for r in group(rule, "x-usage-exporter")["rules"]]
    assert any("{{ $labels.project }}" in text for text in walk_strings(annotations))


def test_values_threshold_defaults_equal_the_thresholds_file() -> None:
    with helm_python.Chart.load(CHART) as chart:
        defaults = chart.values["prometheusRule"]["thresholds"]
    assert {key: float(value) for key, value in defaults.items()} == file_thresholds()
    schema_keys = set(
        read_yaml(CHART / "values.schema.json")["properties"]["prometheusRule"]["properties"][
            "thresholds"
        ]["properties"]
    )
    assert schema_keys == set(file_thresholds())


def test_overridden_thresholds_and_job_regex_reach_the_thresholds_group() -> None:
    values = ci("all-enabled-values.yaml")
    overrides = values["prometheusRule"]["thresholds"]
    assert overrides
    rule = one(manifests(values), "PrometheusRule")
    (file_group,) = read_yaml(REPO / "alerts" / "thresholds.yml")["groups"]
    rendered = group(rule, file_group["name"])
    assert [r["record"] for r in rendered["rules"]] == [r["record"] for r in file_group["rules"]]
    for got, default in zip(rendered["rules"], file_group["rules"], strict=True):
        match = THRESHOLD_RECORD.match(default["record"])
        if match and match["key"] in overrides:
            assert threshold_number(got["expr"]) == overrides[match["key"]]
            assert "e+" not in got["expr"]
        elif match:
            assert got == default
        else:
            regex = values["prometheusRule"]["exporterJobRegex"]
            assert got["expr"] == f'up{{job=~"{regex}"}}'


def test_unknown_threshold_key_fails_even_without_the_schema() -> None:
    with pytest.raises(helm_python.HelmError, match="cap_utilisation_warning"):
        render(
            with_prometheus_rule({"prometheusRule": {"thresholds": {"cap_utilisation_warning": 1}}})
        )


def test_thresholds_group_can_be_left_out() -> None:
    values = with_prometheus_rule({"prometheusRule": {"thresholdsEnabled": False}})
    rule = one(manifests(values), "PrometheusRule")
    assert [g["name"] for g in rule["spec"]["groups"]] == ["x-usage-exporter"]


def test_prometheus_rule_labels_and_namespace_are_configurable() -> None:
    values = with_prometheus_rule(
        {"prometheusRule": {"additionalLabels": {"release": "kps"}, "namespace": "rules"}}
    )
    rule = one(manifests(values), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["namespace"] == "rules"


@pytest.mark.parametrize(
    "values",
    [with_prometheus_rule(), ci("all-enabled-values.yaml")],
    ids=["defaults", "all-enabled-values.yaml"],
)
def test_prometheus_rule_passes_promtool_check_rules(values: Values, tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rule = one(manifests(values), "PrometheusRule")
    rule_file = tmp_path / "rules.yml"
    rule_file.write_text(yaml.safe_dump(rule["spec"], sort_keys=False), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- dashboards and file copies -------------------------------------------------------------


def test_dashboards_configmap_holds_every_dashboard_byte_equal() -> None:
    values = ci("all-enabled-values.yaml")
    config_map = one(manifests(values), "ConfigMap", "-dashboards")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == values["dashboards"]["namespace"]
    assert config_map["metadata"]["annotations"] == values["dashboards"]["annotations"]
    sources = dashboard_sources()
    assert sources, "grafana/dashboards/*.json is empty"
    assert sorted(config_map["data"]) == [path.name for path in sources]
    for path in sources:
        assert config_map["data"][path.name].encode("utf-8") == path.read_bytes(), path.name


def test_dashboard_label_is_configurable() -> None:
    values = {"dashboards": {"enabled": True, "label": "grafana_dashboard_x", "labelValue": "yes"}}
    config_map = one(manifests(values), "ConfigMap", "-dashboards")
    assert config_map["metadata"]["labels"]["grafana_dashboard_x"] == "yes"


def test_chart_file_copies_equal_their_sources() -> None:
    pairs = [(path, CHART / "files" / "alerts" / path.name) for path in alert_sources()]
    pairs += [(path, CHART / "files" / "dashboards" / path.name) for path in dashboard_sources()]
    assert len(pairs) >= 3
    stale = [
        (src, dst) for src, dst in pairs if not dst.exists() or dst.read_bytes() != src.read_bytes()
    ]
    copies = {dst for _, dst in pairs}
    extra = [
        path
        for pattern in ("alerts/*", "dashboards/*")
        for path in (CHART / "files").glob(pattern)
        if path not in copies
    ]
    fixes = [
        f"cp {shlex.quote(str(src.relative_to(REPO)))} {shlex.quote(str(dst.relative_to(REPO)))}"
        for src, dst in stale
    ]
    fixes += [f"rm {shlex.quote(str(path.relative_to(REPO)))}" for path in extra]
    assert not fixes, "chart copies are out of date; run from the repository root:\n" + "\n".join(
        fixes
    )
