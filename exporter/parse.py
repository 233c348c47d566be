"""Pure parsers for X API answers: usage (both documented shapes), credits, problem bodies."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from exporter.errors import ParseError, describe

UNKNOWN_APP = "unknown"
USAGE_FIELDS = (
    "cap_reset_day",
    "daily_client_app_usage",
    "daily_project_usage",
    "project_cap",
    "project_id",
    "project_usage",
)


@dataclass(frozen=True, slots=True)
class UsageReport:
    """One parsed answer of GET /2/usage/tweets; daily figures are per UTC day."""

    project_id: str | None
    cap: int | None
    cap_reset_day: int | None
    project_usage: int | None  # absent in the overview-page shape: sum the cycle's days then
    daily: Mapping[date, int]  # project total per day
    apps: Mapping[str, Mapping[date, int]]  # per client App per day
    missing: tuple[str, ...] = ()  # documented fields the answer did not carry
    api_errors: tuple[str, ...] = ()  # titles from an `errors` list beside `data`
    invalid: tuple[str, ...] = ()  # fields the answer carried but not as documented


# Neither reading of cap_reset_day (a day of the month, days until the reset) goes past 31.
MAX_CAP_RESET_DAY = 31


@dataclass(frozen=True, slots=True)
class Credits:
    """The balances of /2/usage/credits; a balance the answer did not carry is None."""

    total_balance: float | None
    prepaid_balance: float | None
    free_balance: float | None

    @property
    def balance(self) -> float:
        """What is left to spend: total_balance, else the sum of the balances present."""
        if self.total_balance is not None:
            return self.total_balance
        parts = [b for b in (self.prepaid_balance, self.free_balance) if b is not None]
        return max(0.0, sum(parts))


@dataclass(frozen=True, slots=True)
class Problem:
    """An application/problem+json body, or what could be read of a non-JSON error body."""

    title: str = ""
    type: str = ""
    detail: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_usage_cap(self) -> bool:
        return self.title == "UsageCapExceeded" or self.type.endswith("usage-capped")


# Counts above this are not Posts: a guard against absurd numbers, not a business limit.
_MAX_DIGITS = 18
_MAX_DATE_LENGTH = 40  # `2026-11-23T00:00:00.000000+00:00` is 32


def decode_json(body: bytes) -> object:
    try:
        return json.loads(body)
    # ValueError: an integer beyond Python's digit limit; RecursionError: absurd nesting.
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"answer is not JSON: {describe(exc)}") from None


def parse_usage(payload: object) -> UsageReport:
    """Parse a usage answer of any shape seen in the wild; ParseError names the bad field.

    A figure is either read, or its field is named in `missing` or `invalid`: never a silent 0.
    """
    data = _data_object(payload)
    # A field sent as null says no more than an absent one: both are missing.
    missing = [name for name in USAGE_FIELDS if data.get(name) is None]
    found = _Found()
    daily_raw = data.get("daily_project_usage")
    app_raw = data.get("daily_client_app_usage")
    project_usage = _count(data.get("project_usage"), "data.project_usage")
    if daily_raw is None and app_raw is None and project_usage is None:
        raise ParseError(
            "data: none of project_usage, daily_project_usage, daily_client_app_usage is present"
        )

    daily: dict[date, int] = {}
    apps: dict[str, dict[date, int]] = {}
    if isinstance(daily_raw, list):
        # Overview-page shape: [{date, usage: [{app_id, tweets_consumed}]}] and its variants.
        daily, apps = _parse_overview_days(daily_raw, found)
        if "daily_client_app_usage" in missing:
            missing.remove("daily_client_app_usage")  # the apps are inside the daily entries
    elif isinstance(daily_raw, Mapping):
        path = "data.daily_project_usage.usage"
        daily = _parse_day_counts(daily_raw.get("usage"), path, found, "daily_project_usage")
    elif daily_raw is not None:
        raise ParseError(f"data.daily_project_usage: unexpected {type(daily_raw).__name__}")

    if app_raw is not None:
        if not isinstance(app_raw, list):
            raise ParseError("data.daily_client_app_usage: expected a list")
        if app_raw:
            # Both shapes in one answer describe the same Apps twice: the reference list wins.
            apps = {}
        for index, entry in enumerate(app_raw):
            path = f"data.daily_client_app_usage[{index}]"
            entry_map = _mapping(entry, path)
            app_id = _app_id(entry_map.get("client_app_id"), f"{path}.client_app_id")
            days = _parse_day_counts(
                entry_map.get("usage"), f"{path}.usage", found, "daily_client_app_usage"
            )
            merged = apps.setdefault(app_id, {})
            for day, count in days.items():
                found.put(merged, day, count, "daily_client_app_usage", add=app_id == UNKNOWN_APP)

    if not _has_days(daily_raw):
        # No project series, or one without a single day (`[]` is seen): the Apps' days are the
        # project's, summed; otherwise an empty series would read as a project without usage.
        for days in apps.values():
            for day, count in days.items():
                daily[day] = daily.get(day, 0) + count

    project_id = data.get("project_id")
    if project_id is not None and (
        isinstance(project_id, bool) or not isinstance(project_id, str | int)
    ):
        raise ParseError(f"data.project_id: expected an id, got {_kind(project_id)}")
    cap_reset_day = _count(data.get("cap_reset_day"), "data.cap_reset_day")
    if cap_reset_day is not None and cap_reset_day > MAX_CAP_RESET_DAY:
        found.invalid.add("cap_reset_day")  # kept raw; the cycle math falls back (billing)
    return UsageReport(
        project_id=None if project_id is None else str(project_id),
        cap=_count(data.get("project_cap"), "data.project_cap"),
        cap_reset_day=cap_reset_day,
        project_usage=project_usage,
        daily=daily,
        apps=apps,
        missing=tuple(missing) + tuple(sorted(found.missing)),
        api_errors=_error_titles(payload),
        invalid=tuple(sorted(found.invalid)),
    )


def _has_days(daily_raw: object) -> bool:
    """Whether the project series holds at least one day entry, in either shape."""
    if isinstance(daily_raw, Mapping):
        daily_raw = daily_raw.get("usage")
    return isinstance(daily_raw, list) and bool(daily_raw)


def parse_credits(payload: object) -> Credits:
    """Whichever balances the answer carries; ParseError when it carries none."""
    data = _data_object(payload)
    credits = Credits(
        total_balance=_money(data.get("total_balance"), "data.total_balance"),
        prepaid_balance=_money(data.get("prepaid_balance"), "data.prepaid_balance"),
        free_balance=_money(data.get("free_balance"), "data.free_balance"),
    )
    if (credits.total_balance, credits.prepaid_balance, credits.free_balance) == (None,) * 3:
        raise ParseError("data: none of total_balance, prepaid_balance, free_balance is present")
    return credits


def parse_problem(body: bytes) -> Problem:
    """Read an error body leniently: an unreadable body is an empty Problem, never an error."""
    try:
        payload = decode_json(body)
    except ParseError:
        return Problem()
    if not isinstance(payload, Mapping):
        return Problem()
    # A 200-style body may carry the problem inside an `errors` list.
    errors = payload.get("errors")
    if "title" not in payload and isinstance(errors, list) and errors:
        first = errors[0]
        payload = first if isinstance(first, Mapping) else {}
    known = {"title", "type", "detail"}
    return Problem(
        title=str(payload.get("title", "")),
        type=str(payload.get("type", "")),
        detail=str(payload.get("detail", "")),
        extra={k: v for k, v in payload.items() if k not in known},
    )


def _data_object(payload: object) -> Mapping[str, Any]:
    root = _mapping(payload, "answer")
    data = root.get("data")
    if data is None:
        titles = _error_titles(payload)
        if titles:
            raise ParseError(f"answer has no data, errors: {', '.join(titles)}")
        raise ParseError("data: missing")
    return _mapping(data, "data")


def _error_titles(payload: object) -> tuple[str, ...]:
    errors = payload.get("errors") if isinstance(payload, Mapping) else None
    if not isinstance(errors, list):
        return ()
    titles = []
    for item in errors:
        if isinstance(item, Mapping):
            titles.append(str(item.get("title") or item.get("detail") or "error"))
    return tuple(titles)


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ParseError(f"{path}: expected an object, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _count(value: object, path: str) -> int | None:
    """A non-negative count sent as an integer or as a string of digits; null is None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ParseError(f"{path}: expected a count, got a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        if len(value.strip()) > _MAX_DIGITS:
            raise ParseError(f"{path}: expected a count, got {_preview(value)}")
        number = int(value.strip())
    else:
        raise ParseError(f"{path}: expected a count, got {_preview(value)}")
    if not 0 <= number < 10**_MAX_DIGITS:
        raise ParseError(f"{path}: expected a count, got {_preview(number)}")
    return number


def _money(value: object, path: str) -> float | None:
    """An amount sent as a number or a numeric string; null or absent is None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ParseError(f"{path}: expected an amount, got {_kind(value)}")
    try:
        amount = float(value) if isinstance(value, int | float | str) else float("nan")
    except (ValueError, OverflowError):
        amount = float("nan")
    if not math.isfinite(amount):
        raise ParseError(f"{path}: expected an amount, got {_preview(value)}")
    return amount


def _preview(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**_MAX_DIGITS:
        return "a number too large"
    text = json.dumps(value) if isinstance(value, str | int | float) else _kind(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _day(value: object, path: str) -> date:
    """`YYYY-MM-DD`, or an ISO 8601 time such as `YYYY-MM-DDT00:00:00.000Z`: its UTC day.

    A time with an offset is moved to UTC first; one without is read as UTC. Anything else
    (trailing text included) is refused.
    """
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    elif isinstance(value, str) and 10 < len(value) <= _MAX_DATE_LENGTH:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if moment.tzinfo is not None:
                moment = moment.astimezone(UTC)
            return moment.date()
    raise ParseError(f"{path}: expected a date, got {_preview(value)}")


def _app_id(value: object, path: str) -> str:
    if value is None:
        return UNKNOWN_APP
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ParseError(f"{path}: expected an id, got {_kind(value)}")
    return str(value) or UNKNOWN_APP


class _Found:
    """What a parse noticed beside the figures: missing sub-fields, duplicates, odd values."""

    def __init__(self) -> None:
        self.missing: set[str] = set()
        self.invalid: set[str] = set()

    def put(self, series: dict[date, int], day: date, count: int, field: str, *, add: bool) -> None:
        """Record a day's count. A repeated day is the same day sent twice: keep the larger
        count and flag the field, never sum it (add=True only for distinct Apps without an id)."""
        if day in series and not add:
            self.invalid.add(field)
            series[day] = max(series[day], count)
        else:
            series[day] = series.get(day, 0) + count


def _day_count(entry: Mapping[str, Any], path: str) -> int | None:
    """A day's own count: `usage` as a number, or `tweets_consumed`; null is 0 (documented as a
    day with no recorded usage); None when the day carries no count of its own."""
    for key in ("usage", "tweets_consumed"):
        if key in entry and not isinstance(entry[key], list):
            return _count(entry[key], f"{path}.{key}") or 0
    return None


def _parse_day_counts(raw: object, path: str, found: _Found, field: str) -> dict[date, int]:
    """[{date, usage}] into {day: count}; a day without a count is skipped and reported."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ParseError(f"{path}: expected a list, got {_kind(raw)}")
    days: dict[date, int] = {}
    for index, entry in enumerate(raw):
        entry_map = _mapping(entry, f"{path}[{index}]")
        day = _day(entry_map.get("date"), f"{path}[{index}].date")
        count = _day_count(entry_map, f"{path}[{index}]")
        if count is None:
            if "usage" in entry_map:
                raise ParseError(f"{path}[{index}].usage: expected a count, got list")
            found.missing.add(f"{field}.usage")
            continue
        found.put(days, day, count, field, add=False)
    return days


def _parse_overview_days(
    raw: Sequence[object], found: _Found
) -> tuple[dict[date, int], dict[str, dict[date, int]]]:
    """The list shape: each day nests per-App counts, or carries its own count, or both."""
    field = "daily_project_usage"
    daily: dict[date, int] = {}
    apps: dict[str, dict[date, int]] = {}
    for index, entry in enumerate(raw):
        path = f"data.daily_project_usage[{index}]"
        entry_map = _mapping(entry, path)
        day = _day(entry_map.get("date"), f"{path}.date")
        own = _day_count(entry_map, path)
        usage = entry_map.get("usage")
        if not isinstance(usage, list):
            if own is None:
                found.missing.add(f"{field}.usage")
            else:
                found.put(daily, day, own, field, add=False)
            continue
        # This day's Apps: Apps without an id are distinct Apps, so they add up within the day;
        # the same day sent again is the same day, kept once (the larger count) by put().
        day_apps: dict[str, dict[date, int]] = {}
        for app_index, app_entry in enumerate(usage):
            app_path = f"{path}.usage[{app_index}]"
            app_map = _mapping(app_entry, app_path)
            app_id = _app_id(app_map.get("app_id"), f"{app_path}.app_id")
            if "tweets_consumed" not in app_map:
                found.missing.add(f"{field}.usage.tweets_consumed")
                continue
            count = _count(app_map.get("tweets_consumed"), f"{app_path}.tweets_consumed") or 0
            found.put(day_apps.setdefault(app_id, {}), day, count, field, add=app_id == UNKNOWN_APP)
        total = 0
        for app_id, counts in day_apps.items():
            total += counts[day]
            found.put(apps.setdefault(app_id, {}), day, counts[day], field, add=False)
        # A day that also carries its own count: that is the project's figure for the day.
        found.put(daily, day, total if own is None else own, field, add=False)
    return daily, apps
