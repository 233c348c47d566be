"""Config: every problem named by its key path, all at once; good files become frozen objects."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from exporter.config import (
    MAX_PROJECTS,
    CapResetDayMeans,
    CreditsMode,
    format_duration,
    load_config,
    parse_duration,
)
from exporter.errors import ConfigError


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(text)
    (tmp_path / "token").write_text("secret-token-value\n")
    return str(path)


def _problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text), environ or {})
    return caught.value.problems


def test_a_full_config_becomes_frozen_typed_objects(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
api_base_url: http://127.0.0.1:8080/
poll_interval: 1m30s
request_timeout: 500ms
history_days: 30
cap_reset_day_means: days_remaining
credits: "off"
pricing: {post_read_usd: 0.004}
projects:
  - name: production
    bearer_token_file: token
    budget_usd: 400
    spending_limit_usd: 800.5
  - name: staging
    bearer_token_env: STAGING_TOKEN
""",
    )
    config = load_config(path, {"STAGING_TOKEN": "abc123"})
    assert config.api_base_url == "http://127.0.0.1:8080"
    assert config.poll_interval == 90.0
    assert config.request_timeout == 0.5
    assert config.history_days == 30
    assert config.cap_reset_day_means is CapResetDayMeans.DAYS_REMAINING
    assert config.credits is CreditsMode.OFF
    assert config.pricing.post_read_usd == 0.004
    assert config.pricing.owned_read_usd == 0.001
    production, staging = config.projects
    assert production.token.file == tmp_path / "token"
    assert (production.budget_usd, production.spending_limit_usd) == (400.0, 800.5)
    assert staging.token.env == "STAGING_TOKEN"
    assert staging.budget_usd is None
    with pytest.raises(AttributeError):
        config.poll_interval = 1  # type: ignore[misc]


def test_defaults_follow_the_spec(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "projects: [{name: p, bearer_token_file: token}]"), {})
    assert config.api_base_url == "https://api.x.com"
    assert (config.poll_interval, config.request_timeout, config.history_days) == (300, 10, 90)
    assert config.cap_reset_day_means is CapResetDayMeans.DAY_OF_MONTH
    assert config.credits is CreditsMode.AUTO
    assert config.pricing.post_read_usd == 0.005
    assert config.warnings() == []


def test_every_problem_is_reported_at_once_with_its_key_path(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """
poll_intervall: 5m
poll_interval: 0s
request_timeout: soon
history_days: 91
cap_reset_day_means: weekly
pricing: {post_read_usd: -1}
projects:
  - name: a
    bearer_token_file: missing-file
  - name: a
    bearer_token_env: NOT_SET
    budget_usd: -5
  - name: b
    bearer_token: abc
""",
    )
    path = str(tmp_path / "config.yml")
    expected = [
        "poll_intervall: unknown key",
        "poll_interval: must be greater than 0",
        "request_timeout: 'soon' is not a duration",
        "history_days: must be between 1 and 90",
        "cap_reset_day_means: must be one of day_of_month, days_remaining",
        "pricing.post_read_usd: must not be negative",
        f"projects[0].bearer_token_file: no such file: {tmp_path / 'missing-file'}",
        "projects[1].name: duplicate project name 'a'",
        "projects[1].bearer_token_env: environment variable NOT_SET is not set or empty",
        "projects[1].budget_usd: must be greater than 0",
        "projects[2].bearer_token: unknown key (tokens are never written inline",
        "projects[2]: needs exactly one of bearer_token_file or bearer_token_env",
    ]
    for fragment in expected:
        assert any(p.startswith(f"{path}: {fragment}") for p in problems), (fragment, problems)
    assert len(problems) == len(expected)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("projects: []", "projects: must be a non-empty list"),
        ("projects: [{name: p, bearer_token_file: token, budget_usd: yes}]", "must be a number"),
        ("projects: [{name: p, bearer_token_file: token}]\nhistory_days: 2.5", "whole number"),
        ("projects: [{name: p, bearer_token_file: token}]\napi_base_url: ftp://x", "http(s) URL"),
        ("projects: [{name: '', bearer_token_file: token}]", "name: must be a non-empty string"),
        ("projects: [{name: p, bearer_token_file: token, bearer_token_env: X}]", "exactly one"),
        ("projects: [{name: p, bearer_token_file: empty}]", "is empty"),
        ("projects: [{name: p\n", "invalid YAML at line"),
        ("projects: [{name: p, bearer_token_file: token}]\npoll_interval: 5", "duration"),
        # Unbounded inputs that crashed (a traceback, or a crash loop once serving): review
        # 2026-11-30.
        (
            "projects: [{name: p, bearer_token_file: token, budget_usd: " + "9" * 400 + "}]",
            "budget_usd: must be at most 1,000,000,000,000",
        ),
        (
            "projects: [{name: p, bearer_token_file: token}]\npricing: {post_read_usd: .inf}",
            "pricing.post_read_usd: must be at most",
        ),
        ("projects: [{name: p, bearer_token_file: token}]\npoll_interval: 10000y", "at most 24h"),
        ("projects: [{name: p, bearer_token_file: token}]\nrequest_timeout: 25h", "at most 24h"),
        (
            "projects: [{name: '" + "n" * 129 + "', bearer_token_file: token}]",
            "name: must be at most 128 printable characters",
        ),
        (
            'projects: [{name: "a\\nb", bearer_token_file: token}]',
            "name: must be at most 128 printable characters",
        ),
    ],
)
def test_bad_input_is_refused_with_one_clear_line(tmp_path: Path, text: str, fragment: str) -> None:
    (tmp_path / "empty").write_text("  \n")
    problems = _problems(tmp_path, text)
    assert any(fragment in problem for problem in problems), problems
    assert all("\n" not in problem and "Traceback" not in problem for problem in problems)


@pytest.mark.parametrize(
    ("file_content", "env_value", "env_name", "fragment"),
    [
        ("Qx7Tz9Kp-one\nWm3Rv8Ls-two\n", None, None, "odd-token is not a bearer token"),
        ("\ufeffQx7Tz9Kp-bom-Wm3Rv8Ls", None, None, "odd-token is not a bearer token"),
        (None, "Qx7Tz9Kp-crlf-Wm3Rv8Ls\r\n# rotated", "XTOK", "XTOK is not a bearer token"),
        (None, "x", "Qx7Tz9Kp pasted Wm3Rv8Ls", "must be an environment variable name"),
        (None, "x", "A" * 129, "must be an environment variable name"),
    ],
    ids=["line-break", "bom", "env-crlf", "env-name-is-a-token", "env-name-too-long"],
)
def test_a_token_that_cannot_be_a_header_is_refused_without_quoting_it(
    tmp_path: Path,
    file_content: str | None,
    env_value: str | None,
    env_name: str | None,
    fragment: str,
) -> None:
    """A line break inside a token reached the log and the page through the HTTP library's
    complaint, and check-config accepted it; a long variable name was quoted whole (review,
    2026-11-30)."""
    if file_content is not None:
        (tmp_path / "odd-token").write_text(file_content, encoding="utf-8")
        text = "projects: [{name: p, bearer_token_file: odd-token}]"
        environ: dict[str, str] = {}
    else:
        assert env_name is not None and env_value is not None
        text = f"projects: [{{name: p, bearer_token_env: '{env_name}'}}]"
        environ = {env_name: env_value}
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text), environ)
    (problem,) = caught.value.problems
    assert fragment in problem
    for secret in (file_content, env_value, env_name):
        for piece in (secret or "").split():
            if len(piece) >= 8:
                assert piece not in problem
    assert len(problem) < 300


@pytest.mark.parametrize(("text", "mode"), [("off", "off"), ("on", "on"), ("'off'", "off")])
def test_unquoted_on_and_off_mean_the_credits_modes(tmp_path: Path, text: str, mode: str) -> None:
    path = _write(tmp_path, f"credits: {text}\nprojects: [{{name: p, bearer_token_file: token}}]")
    assert load_config(path, {}).credits is CreditsMode(mode)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "nope.yml"), {})
    assert caught.value.problems == [f"{tmp_path / 'nope.yml'}: no such file"]


def test_x_bearer_token_alone_monitors_one_project() -> None:
    config = load_config(None, {"X_BEARER_TOKEN": "abc"})
    (project,) = config.projects
    assert (project.name, project.token.env) == ("default", "X_BEARER_TOKEN")
    with pytest.raises(ConfigError, match="X_BEARER_TOKEN is not set"):
        load_config(None, {})


def test_an_interval_under_the_rate_limit_is_allowed_but_warned_about(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "poll_interval: 10s\nrequest_timeout: 2s\nprojects: [{name: p, bearer_token_file: token}]",
    )
    config = load_config(path, {})
    assert config.poll_interval == 10
    (warning,) = config.warnings()
    assert warning.startswith("poll_interval: 10s polls more often")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("1d", 86400), ("2w", 1209600)],
)
def test_prometheus_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "m5", "1.5h", "-1m", "5min"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_durations_format_back_to_short_text() -> None:
    assert [format_duration(s) for s in (0.5, 18, 90, 3600, 5400)] == [
        "500ms",
        "18s",
        "1m30s",
        "1h",
        "1h30m",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the file is empty: it needs at least a projects list"),
        ("# only a comment\n", "the file is empty: it needs at least a projects list"),
        (
            "- 1\n- 2",
            "the top level must be a mapping of settings (projects, poll_interval, ...), got list",
        ),
        (
            "just text",
            "the top level must be a mapping of settings (projects, poll_interval, ...), got str",
        ),
    ],
)
def test_an_empty_file_or_a_top_level_non_mapping_is_one_clear_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "config.yml"
    assert _problems(tmp_path, text) == [f"{path}: {problem}"]


def test_an_invalid_name_does_not_hide_the_project_s_other_problems(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        "projects: [{name: [x], bearer_token_file: missing, budget_usd: -1, spending_limit: 5}]",
    )
    path = tmp_path / "config.yml"
    assert sorted(problems) == sorted(
        [
            f"{path}: projects[0].spending_limit: unknown key",
            f"{path}: projects[0].name: must be a non-empty string",
            f"{path}: projects[0].bearer_token_file: no such file: {tmp_path / 'missing'}",
            f"{path}: projects[0].budget_usd: must be greater than 0",
        ]
    )


def test_an_empty_project_is_refused_naming_its_index(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "projects: [{}]")
    path = tmp_path / "config.yml"
    assert problems == [
        f"{path}: projects[0].name: must be a non-empty string",
        f"{path}: projects[0]: needs exactly one of bearer_token_file or bearer_token_env",
    ]


def test_check_config_exits_2_on_an_empty_project(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exporter.cli import main

    assert main(["check-config", "--config.file", _write(tmp_path, "projects: [{}]")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "projects[0]" in captured.err and ": ok," not in captured.err


@pytest.mark.parametrize("key", ["poll_interval", "request_timeout"])
def test_a_negative_duration_must_be_greater_than_zero(tmp_path: Path, key: str) -> None:
    problems = _problems(tmp_path, f"{key}: -5m\nprojects: [{{name: p, bearer_token_file: token}}]")
    assert problems == [f"{tmp_path / 'config.yml'}: {key}: must be greater than 0"]


@pytest.mark.parametrize(
    ("settings", "warning"),
    [
        (
            "projects: [{name: p, bearer_token_file: token, budget_usd: 500,"
            " spending_limit_usd: 400}]",
            "projects[0].spending_limit_usd: 400 is below budget_usd 500 (p): the X API blocks",
        ),
        (
            "poll_interval: 1m\nrequest_timeout: 20s\n"
            "projects: [{name: p, bearer_token_file: token}]",
            "request_timeout: 20s is not well below poll_interval (1m)",
        ),
        (
            "history_days: 30\nprojects: [{name: p, bearer_token_file: token}]",
            "history_days: 30 days cannot hold a whole billing cycle (up to 31 days): per-App",
        ),
    ],
)
def test_risky_settings_are_warned_about_by_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: str, warning: str
) -> None:
    from exporter.cli import main

    path = _write(tmp_path, settings)
    (found,) = load_config(path, {}).warnings()
    assert found.startswith(warning), found
    assert main(["check-config", "--config.file", path]) == 0
    assert capsys.readouterr().err == f"x-usage-exporter: warning: {found}\n"


def test_settings_just_inside_the_warnings_are_quiet(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "poll_interval: 1m\nrequest_timeout: 15s\nhistory_days: 31\n"
        "projects: [{name: p, bearer_token_file: token, budget_usd: 400,"
        " spending_limit_usd: 400}]",
    )
    assert load_config(path, {}).warnings() == []


def test_the_exporter_logs_the_warnings_at_start(tmp_path: Path) -> None:
    from tests.servers import Exporter

    path = _write(
        tmp_path,
        "api_base_url: http://127.0.0.1:9\nhistory_days: 7\n"
        "projects: [{name: p, bearer_token_file: token}]",
    )
    exporter = Exporter("--config.file", path)
    try:
        exporter.wait_ready("/-/healthy")
        log = exporter.log.read_text()
    finally:
        exporter.stop()
    assert "history_days: 7 days cannot hold a whole billing cycle" in log


def test_more_projects_than_the_bound_are_refused_at_once(tmp_path: Path) -> None:
    """25,000 projects took a minute to start and a 13 s scrape (review, 2026-11-30)."""
    entry = "{name: p%d, bearer_token_file: token}"
    many = ", ".join(entry % k for k in range(MAX_PROJECTS + 1))
    started = time.monotonic()
    problems = _problems(tmp_path, f"projects: [{many}]")
    assert problems == [
        f"{tmp_path / 'config.yml'}: projects: 1001 projects: at most 1000 per exporter"
    ]
    assert time.monotonic() - started < 10
    just = ", ".join(entry % k for k in range(MAX_PROJECTS))
    assert len(load_config(_write(tmp_path, f"projects: [{just}]"), {}).projects) == MAX_PROJECTS
