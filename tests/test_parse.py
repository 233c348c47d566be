"""Parser: both documented shapes, numbers as strings or integers, nulls, and named failures."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from exporter.errors import ParseError
from exporter.parse import parse_credits, parse_problem, parse_usage

GOLDEN = Path(__file__).parent / "golden" / "usage-answer.json"


def _answer() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(GOLDEN.read_text())
    return loaded


def test_the_api_reference_shape_with_string_numbers() -> None:
    report = parse_usage(_answer())
    assert report.project_id == "1460987654321098752"
    assert (report.cap, report.cap_reset_day, report.project_usage) == (3_000_000, 19, 219_800)
    assert report.daily[date(2026, 11, 23)] == 27_600
    assert len(report.daily) == 8
    assert report.apps["29501234"][date(2026, 11, 19)] == 44_800
    assert report.apps["unknown"][date(2026, 11, 17)] == 0  # null usage, null client_app_id
    assert report.missing == ()
    assert report.api_errors == ("Partial Error",)


def test_integers_parse_to_the_same_report_as_strings() -> None:
    as_strings = _answer()
    as_ints = json.loads(
        json.dumps(as_strings), parse_constant=None, object_hook=_ints_for_digit_strings
    )
    assert as_ints["data"]["project_usage"] == 219_800
    assert parse_usage(as_ints) == parse_usage(as_strings)


def _ints_for_digit_strings(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: int(v) if isinstance(v, str) and v.isdigit() else v for k, v in obj.items()}


def test_the_overview_page_shape() -> None:
    payload = {
        "data": {
            "daily_project_usage": [
                {"date": "2024-01-15", "usage": [{"app_id": "12345678", "tweets_consumed": 15420}]},
                {
                    "date": "2024-01-16",
                    "usage": [
                        {"app_id": "12345678", "tweets_consumed": "100"},
                        {"app_id": "87654321", "tweets_consumed": 5},
                    ],
                },
                {"date": "2024-01-17", "usage": None},
            ],
            "project_id": "1234567890",
            "project_cap": 10000000,
        }
    }
    report = parse_usage(payload)
    assert report.cap == 10_000_000
    assert report.project_usage is None
    assert report.daily == {
        date(2024, 1, 15): 15_420,
        date(2024, 1, 16): 105,
        date(2024, 1, 17): 0,
    }
    assert report.apps["87654321"] == {date(2024, 1, 16): 5}
    assert set(report.missing) == {"cap_reset_day", "project_usage"}


def test_the_default_field_set_without_daily_data_parses() -> None:
    payload = {
        "data": {
            "cap_reset_day": 5,
            "project_cap": "2000000",
            "project_id": "9",
            "project_usage": "43435",
        }
    }
    report = parse_usage(payload)
    assert report.project_usage == 43_435
    assert report.daily == {}
    assert set(report.missing) == {"daily_client_app_usage", "daily_project_usage"}


def test_apps_alone_give_the_project_s_days() -> None:
    payload = _answer()
    del payload["data"]["daily_project_usage"]
    report = parse_usage(payload)
    assert report.daily[date(2026, 11, 16)] == 42_000
    assert "daily_project_usage" in report.missing


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d.update(project_usage="12a"),
            'data.project_usage: expected a count, got "12a"',
        ),
        (lambda d: d.update(project_usage=-4), "data.project_usage: expected a count, got -4"),
        (lambda d: d.update(project_cap=True), "data.project_cap: expected a count, got a boolean"),
        (lambda d: d.update(project_cap=1.5), "data.project_cap: expected a count, got 1.5"),
        (
            lambda d: d["daily_project_usage"]["usage"][2].update(date="yesterday"),
            'data.daily_project_usage.usage[2].date: expected a date, got "yesterday"',
        ),
        (
            lambda d: d["daily_client_app_usage"][1].update(usage={}),
            "data.daily_client_app_usage[1].usage: expected a list, got dict",
        ),
        (lambda d: d.update(daily_project_usage="x"), "data.daily_project_usage: unexpected str"),
        (
            lambda d: [d.pop("project_usage"), d.pop("daily_project_usage")],
            "data: neither project_usage nor daily_project_usage is present",
        ),
    ],
)
def test_bad_values_name_their_field(mutate: Any, message: str) -> None:
    payload = _answer()
    mutate(payload["data"])
    with pytest.raises(ParseError) as caught:
        parse_usage(payload)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "answer: expected an object, got list"),
        ({}, "data: missing"),
        (
            {"data": None, "errors": [{"title": "Not Found"}]},
            "answer has no data, errors: Not Found",
        ),
        ({"data": [1]}, "data: expected an object, got list"),
    ],
)
def test_answers_without_data_are_parse_errors(payload: object, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_usage(payload)
    assert str(caught.value) == message


def test_credits_accept_numbers_and_a_negative_prepaid_balance() -> None:
    credits = parse_credits(
        {"data": {"total_balance": 0, "prepaid_balance": -12.5, "free_balance": "3.25"}}
    )
    assert (credits.total_balance, credits.prepaid_balance, credits.free_balance) == (
        0,
        -12.5,
        3.25,
    )
    with pytest.raises(ParseError, match=r"data\.free_balance: expected an amount"):
        parse_credits({"data": {"total_balance": 1, "prepaid_balance": 1, "free_balance": "lots"}})


def test_problem_bodies_tell_a_usage_cap_from_a_rate_limit() -> None:
    cap = parse_problem(
        b'{"title":"UsageCapExceeded","type":"https://api.x.com/2/problems/usage-capped",'
        b'"period":"Monthly"}'
    )
    assert cap.is_usage_cap and cap.extra == {"period": "Monthly"}
    limit = parse_problem(b'{"title":"Too Many Requests","type":"about:blank","status":429}')
    assert not limit.is_usage_cap
    wrapped = parse_problem(b'{"errors":[{"title":"UsageCapExceeded","type":"x"}]}')
    assert wrapped.is_usage_cap
    assert parse_problem(b"<html>bad gateway</html>").title == ""
