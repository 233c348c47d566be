"""Property-based fuzzing of everything that reads what the X API sends: the usage, credits and
problem parsers, the answer classifier, and the snapshot builder fed by the parser."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from exporter.client import Endpoint, RateLimit, classify
from exporter.config import CapResetDayMeans
from exporter.errors import ParseError, Reason, UpstreamError
from exporter.parse import (
    Credits,
    Problem,
    UsageReport,
    decode_json,
    parse_credits,
    parse_problem,
    parse_usage,
)
from exporter.snapshot import build_usage


def fuzz(examples: int) -> settings:
    """derandomize: the same examples on every run, so CI is reproducible; the sizes keep this
    whole file under about twenty seconds."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# -- strategies -----------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)

# Values the parser must accept, as real answers send them ...
valid_counts = st.one_of(
    st.integers(min_value=0, max_value=10**7),
    st.integers(min_value=0, max_value=10**7).map(str),
    st.integers(min_value=0, max_value=10**18 - 1),  # the parser's bound on a count
    st.none(),
    st.just(0.0),
    st.sampled_from(["0", " 42 ", "007", "43435"]),
)
# cap_reset_day: a day of the month or days until the reset, never past 31 in either reading.
valid_reset_days = st.none() | st.integers(min_value=0, max_value=31) | st.just("19")
valid_days = st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31)) | st.dates()
valid_dates = st.one_of(
    valid_days.map(lambda d: f"{d.isoformat()}T00:00:00.000Z"),
    valid_days.map(date.isoformat),
)
valid_ids = st.one_of(
    st.from_regex(r"[1-9][0-9]{0,18}", fullmatch=True),
    st.integers(min_value=0, max_value=10**19),
    st.none(),
    st.just(""),
)
# ... and values it must refuse with a ParseError, or read leniently, but never crash on.
odd_counts = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=10),
    st.sampled_from(["", "-0", "+5", "1e3", "0x10", "12.0", "NaN", "١٢", "²", "1_000"]),
    json_values,
)
odd_dates = st.one_of(
    st.sampled_from(
        [
            "2026-02-30",
            "2026-13-01",
            "2026-00-10",
            "26-11-23",
            "2026/11/23",
            "2026-11-2",
            "",
            "2026-11-23T25:61:00Z",
            "0000-01-01",
            "10000-01-01",
            "2026-W47-1",
            "２０２６-11-23",
        ]
    ),
    st.text(max_size=24),
    st.integers(),
    json_values,
)
odd_ids = st.one_of(st.booleans(), st.floats(), st.text(max_size=12), json_values)


def _mixed(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly valid values, sometimes odd ones: near-valid answers reach deep into the parser."""
    return st.integers(min_value=0, max_value=3).flatmap(lambda i: odd if i == 3 else valid)


def reference_answers(near_valid: bool) -> st.SearchStrategy[dict[str, Any]]:
    """The API reference shape, every field optional, with valid or near-valid values."""
    counts = _mixed(valid_counts, odd_counts) if near_valid else valid_counts
    dates = _mixed(valid_dates, odd_dates) if near_valid else valid_dates
    ids = _mixed(valid_ids, odd_ids) if near_valid else valid_ids
    day = st.fixed_dictionaries({"date": dates, "usage": counts}, optional={"note": json_values})
    days = st.lists(day, max_size=8)
    if near_valid:
        days = _mixed(days, json_values)
    app = st.fixed_dictionaries(
        {"client_app_id": ids, "usage": days}, optional={"usage_result_count": counts}
    )
    apps = st.lists(app, max_size=4)
    project_days = st.fixed_dictionaries({"project_id": ids, "usage": days})
    data = st.fixed_dictionaries(
        {"project_usage": counts},  # null or absent elsewhere: the overview shape has none
        optional={
            "cap_reset_day": _mixed(valid_reset_days, odd_counts)
            if near_valid
            else valid_reset_days,
            "project_cap": counts,
            "project_id": ids,
            "daily_project_usage": _mixed(project_days, json_values)
            if near_valid
            else project_days,
            "daily_client_app_usage": _mixed(apps, json_values) if near_valid else apps,
            "billing_region": json_values,
        },
    )
    return _answer(data, near_valid)


def overview_answers(near_valid: bool) -> st.SearchStrategy[dict[str, Any]]:
    """The overview-page shape: a list of days, each with per-App counts."""
    counts = _mixed(valid_counts, odd_counts) if near_valid else valid_counts
    dates = _mixed(valid_dates, odd_dates) if near_valid else valid_dates
    ids = _mixed(valid_ids, odd_ids) if near_valid else valid_ids
    app = st.fixed_dictionaries({"app_id": ids, "tweets_consumed": counts})
    apps = st.lists(app, max_size=4) | st.none()
    day = st.fixed_dictionaries(
        {"date": dates, "usage": _mixed(apps, json_values) if near_valid else apps}
    )
    data = st.fixed_dictionaries(
        {"daily_project_usage": st.lists(day, max_size=8)},
        optional={
            "project_id": ids,
            "project_cap": counts,
            "cap_reset_day": _mixed(valid_reset_days, odd_counts)
            if near_valid
            else valid_reset_days,
        },
    )
    return _answer(data, near_valid)


def _answer(
    data: st.SearchStrategy[dict[str, Any]], near_valid: bool
) -> st.SearchStrategy[dict[str, Any]]:
    error = st.fixed_dictionaries(
        {}, optional={"title": st.text(max_size=20), "detail": st.text(max_size=20)}
    )
    errors = st.lists(_mixed(error, json_values) if near_valid else error, max_size=3)
    return st.fixed_dictionaries(
        {"data": _mixed(data, json_values) if near_valid else data},
        optional={"errors": errors, "meta": json_values},
    )


near_valid_answers = reference_answers(True) | overview_answers(True)
valid_answers = reference_answers(False) | overview_answers(False)

# -- helpers --------------------------------------------------------------------------------------

T = TypeVar("T")
R = TypeVar("R")


def _parsed_or_parse_error(parse: Callable[[T], R], payload: T) -> R | None:
    """The parser's result, or None if it refused the payload with a ParseError (and only so)."""
    try:
        return parse(payload)
    except ParseError as exc:
        assert str(exc), "a ParseError names what is wrong"
        return None


def _check_report(report: UsageReport) -> None:
    """What every consumer of a report relies on."""
    assert isinstance(report, UsageReport)
    assert report.project_id is None or isinstance(report.project_id, str)
    for value in (report.cap, report.cap_reset_day, report.project_usage):
        assert value is None or (isinstance(value, int) and value >= 0)
    for days in (report.daily, *report.apps.values()):
        assert all(isinstance(d, date) and isinstance(n, int) and n >= 0 for d, n in days.items())
    assert all(isinstance(app_id, str) and app_id for app_id in report.apps)
    assert all(isinstance(title, str) for title in report.api_errors)


# -- the usage parser -----------------------------------------------------------------------------


@fuzz(300)
@given(json_values)
def test_any_json_value_is_a_report_or_a_parse_error(payload: Any) -> None:
    for candidate in (payload, {"data": payload}):
        report = _parsed_or_parse_error(parse_usage, candidate)
        if report is not None:
            _check_report(report)


@fuzz(300)
@given(near_valid_answers)
def test_near_valid_answers_of_both_shapes_are_a_report_or_a_parse_error(payload: Any) -> None:
    report = _parsed_or_parse_error(parse_usage, payload)
    if report is not None:
        _check_report(report)


@fuzz(150)
@given(valid_answers)
def test_valid_answers_of_both_shapes_always_parse(payload: dict[str, Any]) -> None:
    data = payload["data"]
    # The only refusal a valid answer can earn: nothing to count at all.
    assume(data.get("project_usage") is not None or data.get("daily_project_usage") is not None)
    report = parse_usage(payload)
    _check_report(report)
    if isinstance(data.get("daily_project_usage"), list):
        assert "daily_client_app_usage" not in report.missing  # the Apps are in the days


@fuzz(300)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_body_decodes_to_json_or_a_parse_error(body: bytes) -> None:
    payload = _parsed_or_parse_error(decode_json, body)
    if payload is not None:
        report = _parsed_or_parse_error(parse_usage, payload)
        if report is not None:
            _check_report(report)


# -- credits and problems -------------------------------------------------------------------------

amounts = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(min_value=-1e6, max_value=1e6).map(str),
    st.text(max_size=8),
    st.none(),
    st.booleans(),
    json_values,
)
credit_answers = st.fixed_dictionaries(
    {
        "data": _mixed(
            st.fixed_dictionaries(
                {},
                optional={
                    "total_balance": amounts,
                    "prepaid_balance": amounts,
                    "free_balance": amounts,
                    "free_grants": json_values,
                },
            ),
            json_values,
        )
    }
)


@fuzz(300)
@given(credit_answers | json_values)
def test_any_credits_answer_is_a_balance_or_a_parse_error(payload: Any) -> None:
    credits = _parsed_or_parse_error(parse_credits, payload)
    if credits is not None:
        assert isinstance(credits, Credits)
        amounts = (credits.total_balance, credits.prepaid_balance, credits.free_balance)
        assert any(amount is not None for amount in amounts), "no balance is a ParseError"
        for amount in amounts:
            assert amount is None or (isinstance(amount, float) and math.isfinite(amount))
        assert math.isfinite(credits.balance)


problem_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "title": json_values,
            "type": json_values,
            "detail": json_values,
            "status": json_values,
            "errors": json_values | st.lists(json_values, max_size=3),
        },
    ).map(lambda v: json.dumps(v).encode()),
)


@fuzz(300)
@given(problem_bodies)
def test_parse_problem_never_raises(body: bytes) -> None:
    problem = parse_problem(body)
    assert isinstance(problem, Problem)
    assert all(isinstance(text, str) for text in (problem.title, problem.type, problem.detail))


rate_limits = st.builds(
    RateLimit,
    st.none() | st.integers(),
    st.none() | st.integers(),
    st.none() | st.integers(min_value=-(10**12), max_value=10**12),
)


@fuzz(300)
@given(
    st.sampled_from(Endpoint),
    st.integers(min_value=100, max_value=599) | st.sampled_from([401, 403, 429, 503]),
    problem_bodies,
    rate_limits,
)
def test_classify_turns_every_answer_into_none_or_a_reasoned_error(
    endpoint: Endpoint, status: int, body: bytes, rate_limit: RateLimit
) -> None:
    error = classify(endpoint, status, body, rate_limit)
    if 200 <= status < 300:
        assert error is None
        return
    assert isinstance(error, UpstreamError) and isinstance(error.reason, Reason)
    assert error.status == status
    assert str(error).startswith(f"GET {endpoint.path}: {status}")
    if error.reason is Reason.RATE_LIMITED:
        assert status == 429 and error.retry_at is not None
    else:
        assert error.retry_at is None
    expected = {401: Reason.UNAUTHORIZED, 403: Reason.FORBIDDEN}.get(status)
    if expected is not None:
        assert error.reason is expected
    elif status >= 500:
        assert error.reason is Reason.SERVER_ERROR
    elif status != 429:
        assert error.reason is Reason.CLIENT_ERROR


# -- the snapshot builder -------------------------------------------------------------------------

moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@fuzz(120)
@given(
    valid_answers | near_valid_answers,
    moments,
    st.sampled_from(CapResetDayMeans),
    st.floats(min_value=0, max_value=1, allow_nan=False),
)
def test_build_usage_never_raises_on_a_parsed_report(
    payload: Any, now: datetime, means: CapResetDayMeans, price: float
) -> None:
    try:
        report = parse_usage(payload)
    except ParseError:
        assume(False)
        return
    # An absurd days_remaining overflows the cycle math: a known gap, pinned below.
    snapshot = build_usage(report, now=now, means=means, post_read_usd=price)
    assert snapshot.consumed >= 0
    assert snapshot.taken_at == now
    assert snapshot.cycle.start <= now < snapshot.cycle.end


# -- what the fuzzing found, now fixed -------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b"1" * 5_000],
    ids=["deeply-nested", "integer-of-5000-digits"],
)
def test_pathological_bodies_are_a_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError, match="answer is not JSON"):
        decode_json(body)


@pytest.mark.parametrize("count", ["9" * 5_000, 10**30, 1e300])
def test_an_absurd_count_is_a_parse_error(count: object) -> None:
    with pytest.raises(ParseError, match=r"data\.project_usage: expected a count"):
        parse_usage({"data": {"project_usage": count}})


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"title": ' + b"1" * 5_000 + b"}"],
    ids=["deeply-nested", "integer-of-5000-digits"],
)
def test_parse_problem_never_raises_on_pathological_bodies(body: bytes) -> None:
    assert parse_problem(body).title == ""


def test_classify_never_raises_on_a_pathological_error_body() -> None:
    error = classify(Endpoint.USAGE, 503, b"1" * 5_000, RateLimit(None, None, None))
    assert error is not None and error.reason is Reason.SERVER_ERROR


def test_a_balance_too_large_for_a_float_is_a_parse_error() -> None:
    balance = {"total_balance": 10**400, "prepaid_balance": 1, "free_balance": 1}
    with pytest.raises(ParseError, match=r"data\.total_balance: expected an amount"):
        parse_credits({"data": balance})


@pytest.mark.parametrize("days", [32, 123, 3_000_000, 10**17])
def test_a_cap_reset_day_past_31_is_kept_raw_and_flagged_invalid(days: int) -> None:
    report = parse_usage(
        {"data": {"project_usage": "5", "project_cap": "9", "cap_reset_day": days}}
    )
    assert (report.cap_reset_day, report.project_usage, report.cap) == (days, 5, 9)
    assert report.invalid == ("cap_reset_day",)
