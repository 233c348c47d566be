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
            lambda d: [
                d.pop(key)
                for key in ("project_usage", "daily_project_usage", "daily_client_app_usage")
            ],
            "data: none of project_usage, daily_project_usage, daily_client_app_usage is present",
        ),
        (lambda d: d.update(project_usage=-500), "data.project_usage: expected a count, got -500"),
        (
            lambda d: d.update(project_usage="a" * 38),
            f'data.project_usage: expected a count, got "{"a" * 38}"',
        ),
        (
            lambda d: d.update(project_usage="a" * 39),
            f'data.project_usage: expected a count, got "{"a" * 36}...',
        ),
        (
            lambda d: d["daily_project_usage"]["usage"][2].update(date=20261118),
            "data.daily_project_usage.usage[2].date: expected a date, got 20261118",
        ),
        # Refusals the fuzz tests cannot tell from a wrong acceptance (issue 10, item 17).
        (lambda d: d.update(project_id=True), "data.project_id: expected an id, got bool"),
        (lambda d: d.update(project_id=[1]), "data.project_id: expected an id, got list"),
        (lambda d: d.update(project_id=1.0), "data.project_id: expected an id, got float"),
        (
            lambda d: d["daily_client_app_usage"][0].update(client_app_id=2.5),
            "data.daily_client_app_usage[0].client_app_id: expected an id, got float",
        ),
        (
            lambda d: d["daily_client_app_usage"][0].update(client_app_id=False),
            "data.daily_client_app_usage[0].client_app_id: expected an id, got bool",
        ),
        (
            lambda d: d.update(project_usage="1" * 19),
            'data.project_usage: expected a count, got "1111111111111111111"',
        ),
        (
            lambda d: d.update(project_usage=10**18),
            "data.project_usage: expected a count, got a number too large",
        ),
        (
            lambda d: d.update(project_usage=" 12 3"),
            'data.project_usage: expected a count, got " 12 3"',
        ),
        (
            lambda d: d.update(project_usage="١٢"),
            'data.project_usage: expected a count, got "\\u0661\\u0662"',
        ),
        (
            lambda d: d.update(cap_reset_day=False),
            "data.cap_reset_day: expected a count, got a boolean",
        ),
        # Dates were read from their first ten characters: trailing text passed (review 2026-11-30).
        (
            lambda d: d["daily_project_usage"]["usage"][2].update(date="2026-11-18garbage"),
            'data.daily_project_usage.usage[2].date: expected a date, got "2026-11-18garbage"',
        ),
        (
            lambda d: d["daily_project_usage"]["usage"][2].update(date="2026-11-18T25:00:00Z"),
            'data.daily_project_usage.usage[2].date: expected a date, got "2026-11-18T25:00:00Z"',
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


# -- real-world shapes (issue 10) ------------------------------------------------------------------


def test_a_day_that_carries_its_count_directly_is_read_not_zero() -> None:
    payload = {
        "data": {
            "daily_project_usage": [
                {"date": "2026-09-04", "usage": [{"app_id": "7", "tweets_consumed": "5"}]},
                {"date": "2026-09-05", "tweets_consumed": 3},
                {"date": "2026-09-06T00:00:00.000Z", "usage": "010"},  # flat {date, usage}
            ],
            "project_id": "1",
            "project_cap": "100",
        }
    }
    report = parse_usage(payload)
    assert report.daily == {date(2026, 9, 4): 5, date(2026, 9, 5): 3, date(2026, 9, 6): 10}
    assert report.apps == {"7": {date(2026, 9, 4): 5}}
    assert report.invalid == ()


def test_a_day_without_any_count_is_reported_never_a_silent_zero() -> None:
    payload = {
        "data": {
            "daily_project_usage": [
                {"date": "2026-09-04", "tweets_consumed": 4},
                {"date": "2026-09-05"},
                {"date": "2026-09-06", "usage": [{"app_id": "7"}]},
            ],
        }
    }
    report = parse_usage(payload)
    assert report.daily == {date(2026, 9, 4): 4, date(2026, 9, 6): 0}
    assert "daily_project_usage.usage" in report.missing
    assert "daily_project_usage.usage.tweets_consumed" in report.missing
    reference = _answer()
    del reference["data"]["daily_project_usage"]["usage"][0]["usage"]
    report = parse_usage(reference)
    assert date(2026, 11, 16) not in report.daily
    assert "daily_project_usage.usage" in report.missing


def test_an_answer_with_only_daily_client_app_usage_serves_the_apps() -> None:
    payload = _answer()
    data = payload["data"]
    payload["data"] = {"daily_client_app_usage": data["daily_client_app_usage"]}
    report = parse_usage(payload)
    assert report.apps["29501234"][date(2026, 11, 19)] == 44_800
    assert report.daily[date(2026, 11, 19)] == 44_800 + 1_200
    assert set(report.missing) == {
        "cap_reset_day",
        "daily_project_usage",
        "project_cap",
        "project_id",
        "project_usage",
    }


def test_an_impossible_cap_reset_day_keeps_the_answer_and_flags_the_field() -> None:
    payload = _answer()
    payload["data"]["cap_reset_day"] = 123  # the official generated example
    report = parse_usage(payload)
    assert (report.cap_reset_day, report.cap, report.project_usage) == (123, 3_000_000, 219_800)
    assert report.invalid == ("cap_reset_day",)


def test_both_shapes_in_one_answer_count_every_app_once() -> None:
    payload = {
        "data": {
            "daily_project_usage": [
                {
                    "date": "2026-09-05",
                    "usage": [
                        {"app_id": "7", "tweets_consumed": 30},
                        {"app_id": "8", "tweets_consumed": 12},
                    ],
                }
            ],
            "daily_client_app_usage": [
                {"client_app_id": "7", "usage": [{"date": "2026-09-05", "usage": "30"}]},
                {"client_app_id": "8", "usage": [{"date": "2026-09-05", "usage": "12"}]},
            ],
        }
    }
    report = parse_usage(payload)
    assert report.daily == {date(2026, 9, 5): 42}
    assert report.apps == {"7": {date(2026, 9, 5): 30}, "8": {date(2026, 9, 5): 12}}


def test_a_duplicate_date_is_never_summed_and_is_flagged() -> None:
    payload = _answer()
    days = payload["data"]["daily_project_usage"]["usage"]
    days.append({"date": "2026-11-23", "usage": "27600"})  # the same day again
    apps = payload["data"]["daily_client_app_usage"]
    apps[0]["usage"].append({"date": "2026-11-23T00:00:00.000Z", "usage": "27000"})
    report = parse_usage(payload)
    assert report.daily[date(2026, 11, 23)] == 27_600
    assert report.apps["29501234"][date(2026, 11, 23)] == 27_150  # the larger of the two
    assert report.invalid == ("daily_client_app_usage", "daily_project_usage")
    listed = {
        "data": {
            "daily_project_usage": [
                {"date": "2026-09-05", "tweets_consumed": 3},
                {"date": "2026-09-05T12:00:00Z", "tweets_consumed": 3},
            ]
        }
    }
    report = parse_usage(listed)
    assert report.daily == {date(2026, 9, 5): 3}
    assert report.invalid == ("daily_project_usage",)


def test_apps_without_an_id_are_distinct_apps_and_add_up() -> None:
    payload = {
        "data": {
            "project_usage": "9",
            "daily_client_app_usage": [
                {"client_app_id": None, "usage": [{"date": "2026-09-05", "usage": "4"}]},
                {"client_app_id": None, "usage": [{"date": "2026-09-05", "usage": "5"}]},
            ],
        }
    }
    report = parse_usage(payload)
    assert report.apps == {"unknown": {date(2026, 9, 5): 9}}
    assert report.invalid == ()


def test_an_errors_list_beside_data_is_kept_for_the_log_and_the_metric() -> None:
    payload = _answer()
    payload["errors"] = [{"title": "Partial Error"}, {"detail": "no title"}, "junk"]
    assert parse_usage(payload).api_errors == ("Partial Error", "no title")


def test_credits_with_only_some_balances_keep_those() -> None:
    credits = parse_credits({"data": {"prepaid_balance": "12.5"}})
    assert (credits.total_balance, credits.prepaid_balance, credits.free_balance) == (
        None,
        12.5,
        None,
    )
    assert credits.balance == 12.5
    both = parse_credits({"data": {"prepaid_balance": -20, "free_balance": 5}})
    assert both.balance == 0.0  # total_balance = max(0, prepaid + free)
    with pytest.raises(ParseError, match="none of total_balance"):
        parse_credits({"data": {"free_grants": []}})


# -- refusals that the fuzz tests cannot tell from a wrong acceptance (issue 10, item 17) ---------


@pytest.mark.parametrize(
    ("balance", "message"),
    [
        (True, "data.total_balance: expected an amount, got bool"),
        ([1], "data.total_balance: expected an amount, got list"),
        ("NaN", 'data.total_balance: expected an amount, got "NaN"'),
        ("1e999", 'data.total_balance: expected an amount, got "1e999"'),
    ],
)
def test_a_boolean_or_odd_balance_is_refused(balance: object, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_credits({"data": {"total_balance": balance}})
    assert str(caught.value) == message


def test_the_count_limits_are_exact() -> None:
    payload = _answer()
    payload["data"]["project_usage"] = "9" * 18
    assert parse_usage(payload).project_usage == 10**18 - 1
    payload["data"]["project_usage"] = 10**18 - 1
    assert parse_usage(payload).project_usage == 10**18 - 1
    payload["data"]["project_usage"] = " 0042 "
    assert parse_usage(payload).project_usage == 42
    payload["data"]["project_usage"] = 7.0
    assert parse_usage(payload).project_usage == 7
    payload["data"]["cap_reset_day"] = 31
    assert parse_usage(payload).invalid == ()
    payload["data"]["cap_reset_day"] = 32
    assert parse_usage(payload).invalid == ("cap_reset_day",)


def test_a_problem_s_own_title_wins_over_an_errors_list() -> None:
    both = parse_problem(b'{"title":"UsageCapExceeded","errors":[{"title":"Other"}]}')
    assert both.title == "UsageCapExceeded"
    assert parse_problem(b'{"errors":"not a list"}').title == ""
    assert parse_problem(b'{"errors":[]}').title == ""


@pytest.mark.parametrize(
    "series", [[], {"project_id": "1460987654321098752", "usage": []}], ids=["list", "object"]
)
def test_an_empty_project_series_takes_the_apps_days_never_a_silent_zero(series: object) -> None:
    """An empty `daily_project_usage` (SPEC 1a) with per-App days and no `project_usage` read as a
    project without usage: consumption 0 beside Apps with thousands (review, 2026-11-30)."""
    payload = _answer()
    del payload["data"]["project_usage"]
    payload["data"]["daily_project_usage"] = series
    report = parse_usage(payload)
    assert report.daily[date(2026, 11, 16)] == 42_000
    assert report.daily == parse_usage(_without_project_series()).daily
    assert sum(report.daily.values()) > 0


def _without_project_series() -> dict[str, Any]:
    payload = _answer()
    del payload["data"]["daily_project_usage"]
    return payload


@pytest.mark.parametrize("field", ["project_cap", "cap_reset_day", "project_id", "project_usage"])
def test_a_field_sent_as_null_is_reported_missing(field: str) -> None:
    """`"project_cap": null` left the cap absent and the cycle on the calendar month with no
    metric saying why (review, 2026-11-30)."""
    payload = _answer()
    payload["data"][field] = None
    assert field in parse_usage(payload).missing


def test_an_app_without_an_id_on_a_repeated_day_is_not_counted_twice() -> None:
    """The overview shape sending a day twice doubled its App without an id (review, 2026-11-30);
    two Apps without an id on one day are still two Apps."""
    day = {"date": "2026-09-05", "usage": [{"app_id": None, "tweets_consumed": "100"}]}
    report = parse_usage({"data": {"daily_project_usage": [day, dict(day)]}})
    assert report.daily == {date(2026, 9, 5): 100}
    assert report.apps == {"unknown": {date(2026, 9, 5): 100}}
    assert report.invalid == ("daily_project_usage",)
    two = {
        "date": "2026-09-05",
        "usage": [
            {"app_id": None, "tweets_consumed": "100"},
            {"app_id": None, "tweets_consumed": "30"},
            {"app_id": "7", "tweets_consumed": "5"},
        ],
    }
    report = parse_usage({"data": {"daily_project_usage": [two]}})
    assert report.daily == {date(2026, 9, 5): 135}
    assert report.apps == {"unknown": {date(2026, 9, 5): 130}, "7": {date(2026, 9, 5): 5}}
    assert report.invalid == ()


@pytest.mark.parametrize(
    ("sent", "day"),
    [
        ("2026-11-22", date(2026, 11, 22)),
        ("2026-11-22T00:00:00.000Z", date(2026, 11, 22)),
        ("2026-11-22T05:00:00Z", date(2026, 11, 22)),
        ("2026-11-22 00:00:00", date(2026, 11, 22)),
        ("2026-11-22T00:00:00-05:00", date(2026, 11, 22)),
        ("2026-11-22T20:00:00-05:00", date(2026, 11, 23)),  # 01:00 UTC on the 23rd
        ("2026-11-23T01:00:00+02:00", date(2026, 11, 22)),
    ],
)
def test_a_time_is_read_as_its_utc_day(sent: str, day: date) -> None:
    report = parse_usage({"data": {"daily_project_usage": [{"date": sent, "tweets_consumed": 4}]}})
    assert report.daily == {day: 4}
