"""A simulated X API usage service on loopback: realistic data, real rate limits, fault modes."""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from exporter.billing import cycle_for, sum_in_cycle
from exporter.client import RetryPolicy
from exporter.config import CapResetDayMeans

PROBLEMS = "https://api.x.com/2/problems"
_TRICKLE_HEADER = "x-simulator-trickle"  # handler-internal: never sent
OUTAGE_START = 3  # the first poll of the demo succeeds; the third fails
OUTAGE_REQUESTS = RetryPolicy().max_attempts
WEEKDAY_SHAPE = (1.08, 1.12, 1.10, 1.06, 1.0, 0.78, 0.70)  # Monday first: quieter weekends


class Fault(StrEnum):
    SERVER_ERROR = "server_error"  # 503 overloaded
    RATE_LIMIT = "rate_limit"  # 429 Too Many Requests with a reset time
    USAGE_CAPPED = "usage_capped"  # 429 UsageCapExceeded
    UNAUTHORIZED = "unauthorized"  # 401
    FORBIDDEN = "forbidden"  # 403 client-forbidden
    MALFORMED = "malformed"  # 200 with a body that is not JSON
    BAD_FIELD = "bad_field"  # 200 with project_usage that is not a number
    SLOW = "slow"  # answers after `delay` seconds
    TRICKLE = "trickle"  # the usual answer, one byte every `delay` seconds
    CREDITS_DEPLETED = "credits_depleted"  # 402 CreditsDepleted: prepaid credits used up


@dataclass
class FaultPlan:
    fault: Fault
    remaining: int | None  # None: until cleared
    delay: float = 0.0
    reset_after: float = 60.0  # RATE_LIMIT: seconds until x-rate-limit-reset
    path: str | None = None  # only requests to this endpoint; None: every endpoint


@dataclass
class SimProject:
    """One simulated Project; its Posts per day are a deterministic function of the date."""

    project_id: str
    token: str
    apps: dict[str, float]  # app_id -> share of the project's traffic
    cap: int = 3_000_000
    cap_reset_day: int = 1
    mean_daily: float = 40_000.0
    growth_per_day: float = 0.0  # e.g. 0.01 for +1% a day
    origin: date = date(2026, 1, 1)  # the day on which the level is mean_daily
    seed: int = 1
    shape: str = "reference"  # or "overview" (the overview page's documented example shape)
    numbers_as_strings: bool = True
    with_nulls: bool = False  # null usage on quiet days, null client_app_id on one App
    extra_fields: bool = True  # unknown fields the exporter must ignore
    # Documented fields left out even when asked for: real answers lack some (SPEC 1a).
    omitted_fields: frozenset[str] = frozenset()
    credits: dict[str, float] | None = field(
        default_factory=lambda: {"prepaid_balance": 250.0, "free_balance": 25.0}
    )
    user_token: bool = False  # a user-context token: 403 unsupported-authentication
    error_every: int = 0  # every Nth usage request answers 503 overloaded (the demo's hiccups)
    # Of every N usage requests, a run of OUTAGE_REQUESTS from the third on answers 503: more than
    # a poll's attempts, so that poll fails (the demo's failed polls).
    outage_every: int = 0
    api_errors: tuple[str, ...] = ()  # titles of an `errors` list sent beside `data`
    added: dict[tuple[str, date], int] = field(default_factory=dict)

    def day_usage(self, app_id: str, day: date, now: datetime) -> int:
        """Posts the App consumed on `day`; today counts only the elapsed part of the day."""
        if day > now.date():
            return 0
        level = self.mean_daily * (1 + self.growth_per_day) ** (day - self.origin).days
        digest = hashlib.sha256(f"{self.seed}:{app_id}:{day.isoformat()}".encode()).digest()
        noise = random.Random(digest).lognormvariate(0, 0.12)
        full = level * WEEKDAY_SHAPE[day.weekday()] * self.apps[app_id] * noise
        if day == now.date():
            midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
            full *= (now - midnight).total_seconds() / 86400
        return int(full) + self.added.get((app_id, day), 0)

    def daily(self, now: datetime, days: int) -> dict[str, dict[date, int]]:
        first = now.date() - timedelta(days=days - 1)
        span = [first + timedelta(days=offset) for offset in range(days)]
        return {app: {day: self.day_usage(app, day, now) for day in span} for app in self.apps}

    def consumed(self, now: datetime) -> int:
        """Posts consumed in the current billing cycle (what project_usage says)."""
        cycle = cycle_for(now, self.cap_reset_day, CapResetDayMeans.DAY_OF_MONTH)
        days = (now.date() - cycle.start.date()).days + 1
        return sum(sum_in_cycle(d, cycle, now.date()) for d in self.daily(now, days).values())

    def consumed_today(self, now: datetime) -> int:
        return sum(self.day_usage(app, now.date(), now) for app in self.apps)

    def add_posts(self, now: datetime, posts: int, app_id: str | None = None) -> None:
        """Record extra Posts consumed today (by the first App unless named)."""
        app = app_id or next(iter(self.apps))
        key = (app, now.date())
        self.added[key] = self.added.get(key, 0) + posts

    def fill_to_ratio(self, now: datetime, ratio: float) -> None:
        """Consume Posts today until the cycle's consumption reaches `ratio` of the cap."""
        missing = int(self.cap * ratio) - self.consumed(now)
        if missing > 0:
            self.add_posts(now, missing)

    def answer(self, now: datetime, days: int, fields: set[str]) -> dict[str, Any]:
        answer = self._answer(now, days, fields)
        for name in self.omitted_fields:
            answer["data"].pop(name, None)
        return answer

    def _answer(self, now: datetime, days: int, fields: set[str]) -> dict[str, Any]:
        daily = self.daily(now, days)
        number = str if self.numbers_as_strings else int
        if self.shape == "overview":
            days_sorted = sorted(next(iter(daily.values())))
            return {
                "data": {
                    "daily_project_usage": [
                        {
                            "date": day.isoformat(),
                            "usage": [
                                {"app_id": app, "tweets_consumed": daily[app][day]}
                                for app in self.apps
                            ],
                        }
                        for day in days_sorted
                    ],
                    "project_id": self.project_id,
                    "project_cap": self.cap,
                }
            }

        def series(values: dict[date, int]) -> list[dict[str, Any]]:
            return [
                {
                    "date": f"{day.isoformat()}T00:00:00.000Z",
                    "usage": None if self.with_nulls and count == 0 else number(count),
                }
                for day, count in sorted(values.items())
            ]

        totals: dict[date, int] = {}
        for values in daily.values():
            for day, count in values.items():
                totals[day] = totals.get(day, 0) + count
        data: dict[str, Any] = {
            "cap_reset_day": self.cap_reset_day,
            "project_cap": number(self.cap),
            "project_id": self.project_id,
            "project_usage": number(self.consumed(now)),
            "daily_project_usage": {"project_id": self.project_id, "usage": series(totals)},
            "daily_client_app_usage": [
                {
                    "client_app_id": None if self.with_nulls and index == len(daily) - 1 else app,
                    "usage": series(values),
                    "usage_result_count": len(values),
                }
                for index, (app, values) in enumerate(daily.items())
            ],
        }
        if fields:
            data = {key: value for key, value in data.items() if key in fields}
        else:  # the documented default set
            for key in ("daily_project_usage", "daily_client_app_usage"):
                data.pop(key, None)
        answer: dict[str, Any] = {"data": data}
        if self.api_errors:
            answer["errors"] = [
                {"title": title, "type": "about:blank"} for title in self.api_errors
            ]
        if self.extra_fields:
            data["billing_region"] = "global"
            answer["meta"] = {"generated_by": "simulator"}
        return answer


@dataclass
class _Window:
    started: float
    count: int = 0


class Simulator:
    """The X API's usage endpoints for a set of projects, served on 127.0.0.1."""

    LIMITS: ClassVar[dict[str, int]] = {"/2/usage/tweets": 50, "/2/usage/credits": 30}

    def __init__(
        self,
        projects: list[SimProject],
        *,
        clock: Callable[[], datetime] | None = None,
        window_seconds: float = 900.0,
    ) -> None:
        self.projects = {project.token: project for project in projects}
        self.clock = clock or (lambda: datetime.now(UTC))
        self.window_seconds = window_seconds
        self.requests: list[tuple[float, str, str]] = []  # (time, path, project_id or "?")
        self._faults: dict[str | None, FaultPlan] = {}
        self._windows: dict[tuple[str, str], _Window] = {}
        self._usage_requests: dict[str, int] = {}  # token -> usage requests, for error_every
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- control -------------------------------------------------------------------------
    def project(self, project_id: str) -> SimProject:
        return next(p for p in self.projects.values() if p.project_id == project_id)

    def set_fault(
        self,
        fault: Fault,
        *,
        project_id: str | None = None,
        count: int | None = None,
        delay: float = 0.0,
        reset_after: float = 60.0,
        path: str | None = None,
    ) -> None:
        """Answer the next `count` requests (all while None) of a project (or all) with a fault.

        With `path`, only the requests to that endpoint (e.g. "/2/usage/credits").
        """
        with self._lock:
            self._faults[project_id] = FaultPlan(fault, count, delay, reset_after, path)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def request_count(self, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for _, p, _ in self.requests if path is None or p == path)

    # -- serving -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "simulator not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, port: int = 0) -> str:
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, headers, body = simulator.handle(
                    self.path, self.headers.get("Authorization")
                )
                trickle = float(headers.pop(_TRICKLE_HEADER, "0"))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not trickle:
                    self.wfile.write(body)
                    return
                for index in range(len(body)):
                    try:
                        self.wfile.write(body[index : index + 1])
                        self.wfile.flush()
                    except OSError:
                        return  # the client gave up
                    time.sleep(trickle)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test and demo output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="simulator").start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def handle(self, raw_path: str, authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        """Answer one request: (status, headers, body)."""
        parts = urlsplit(raw_path)
        token = (authorization or "").removeprefix("Bearer ").strip()
        project = self.projects.get(token) if authorization else None
        with self._lock:
            self.requests.append((time.time(), parts.path, project.project_id if project else "?"))
        if parts.path not in self.LIMITS:
            return _problem(404, "Not Found Error", f"{PROBLEMS}/resource-not-found", "no route")
        if project is None:
            return _problem(401, "Unauthorized", "about:blank", "Unauthorized")
        if project.user_token:
            return _problem(
                403,
                "Unsupported Authentication",
                f"{PROBLEMS}/unsupported-authentication",
                "Authenticating with OAuth 2.0 User Context is forbidden for this endpoint.",
            )

        limit_headers, limited = self._rate_limit(token, parts.path)
        plan = self._take_fault(project.project_id, parts.path)
        if plan is not None:
            answer = self._fault_answer(plan, limit_headers)
            if answer is not None:
                return answer
        if (project.error_every or project.outage_every) and parts.path == "/2/usage/tweets":
            with self._lock:
                count = self._usage_requests[token] = self._usage_requests.get(token, 0) + 1
            hiccup = project.error_every and count % project.error_every == 0
            outage = project.outage_every and (
                OUTAGE_START <= count % project.outage_every < OUTAGE_START + OUTAGE_REQUESTS
            )
            if hiccup or outage:
                return _problem(503, "Service Unavailable", "about:blank", "Service is overloaded.")
        if limited:
            return _problem(
                429, "Too Many Requests", "about:blank", "Too Many Requests", limit_headers
            )
        now = self.clock()
        if parts.path == "/2/usage/credits":
            if project.credits is None:
                return 404, {"content-length": "0"}, b""
            # Some accounts answer only some balances: send the ones the project has.
            data: dict[str, Any] = dict(project.credits)
            prepaid, free = data.get("prepaid_balance"), data.get("free_balance")
            if prepaid is not None and free is not None:
                data["total_balance"] = max(0.0, prepaid + free)
            if free is not None:
                data["free_grants"] = [{"amount": free, "expires_at": "2027-01-01T00:00:00.000Z"}]
            return _json(200, {"data": data}, limit_headers)
        query = parse_qs(parts.query)
        days = int(query.get("days", ["7"])[0])
        if not 1 <= days <= 90:
            return _problem(400, "Invalid Request", f"{PROBLEMS}/invalid-request", "days: 1-90")
        fields = {f for value in query.get("usage.fields", []) for f in value.split(",") if f}
        if plan is not None and plan.fault is Fault.TRICKLE:
            limit_headers = {**limit_headers, _TRICKLE_HEADER: str(plan.delay)}
        return _json(200, project.answer(now, days, fields), limit_headers)

    def _rate_limit(self, token: str, path: str) -> tuple[dict[str, str], bool]:
        now = time.time()
        limit = self.LIMITS[path]
        with self._lock:
            window = self._windows.get((token, path))
            if window is None or now >= window.started + self.window_seconds:
                window = self._windows[(token, path)] = _Window(now)
            window.count += 1
            remaining = max(limit - window.count, 0)
            limited = window.count > limit
        headers = {
            "x-rate-limit-limit": str(limit),
            "x-rate-limit-remaining": str(remaining),
            # Rounded up: a reset announced before the window really ends invites a 429.
            "x-rate-limit-reset": str(math.ceil(window.started + self.window_seconds)),
        }
        return headers, limited

    def _take_fault(self, project_id: str, path: str) -> FaultPlan | None:
        with self._lock:
            for key in (project_id, None):
                plan = self._faults.get(key)
                if plan is None or plan.path not in (None, path):
                    continue
                if plan.remaining is not None:
                    plan.remaining -= 1
                    if plan.remaining <= 0:
                        del self._faults[key]
                return plan
        return None

    def _fault_answer(
        self, plan: FaultPlan, limit_headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes] | None:
        fault = plan.fault
        if fault is Fault.SLOW:
            time.sleep(plan.delay)
            return None
        if fault is Fault.TRICKLE:
            return None  # the usual answer, trickled by the handler
        if fault is Fault.SERVER_ERROR:
            return _problem(503, "Service Unavailable", "about:blank", "Service is overloaded.")
        if fault is Fault.RATE_LIMIT:
            headers = dict(limit_headers)
            headers["x-rate-limit-remaining"] = "0"
            # Rounded up, so the wait is never shorter than reset_after (int() cut up to 1 s).
            headers["x-rate-limit-reset"] = str(math.ceil(time.time() + plan.reset_after))
            return _problem(429, "Too Many Requests", "about:blank", "Too Many Requests", headers)
        if fault is Fault.USAGE_CAPPED:
            body = {
                "title": "UsageCapExceeded",
                "detail": "Usage cap exceeded: Monthly product cap",
                "type": f"{PROBLEMS}/usage-capped",
                "period": "Monthly",
                "scope": "Product",
            }
            return _json(429, body, limit_headers, "application/problem+json")
        if fault is Fault.CREDITS_DEPLETED:
            depleted = {
                "title": "CreditsDepleted",
                "detail": "Your enrolled account does not have any credits to fulfill this "
                "request.",
                "type": f"{PROBLEMS}/credits",
                "account_id": 1460987654321098752,
            }
            return _json(402, depleted, limit_headers, "application/problem+json")
        if fault is Fault.UNAUTHORIZED:
            return _problem(401, "Unauthorized", "about:blank", "Unauthorized")
        if fault is Fault.FORBIDDEN:
            return _problem(
                403,
                "Client Forbidden",
                f"{PROBLEMS}/client-forbidden",
                "When authenticating requests to the Twitter API v2 endpoints, you must use keys "
                "and tokens from a Twitter developer App that is attached to a Project.",
            )
        if fault is Fault.MALFORMED:
            return 200, {"content-type": "application/json", **limit_headers}, b'{"data": {"proj'
        return _json(200, {"data": {"project_usage": "lots", "project_id": "x"}}, limit_headers)


def _json(
    status: int,
    body: object,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> tuple[int, dict[str, str], bytes]:
    return status, {"content-type": content_type, **(headers or {})}, json.dumps(body).encode()


def _problem(
    status: int, title: str, type_: str, detail: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    body = {"title": title, "type": type_, "detail": detail, "status": status}
    return _json(status, body, headers, "application/problem+json")


def demo_projects(now: datetime) -> list[SimProject]:
    """The demo, on any date: production projected to reach its cap before the cycle ends, with
    credits; research over its budget (cli sets the budgets), without credits (404), a 503
    every seventh usage request (retried) and a failed poll every 60 usage requests (30 minutes at
    the demo's interval, the first on the third poll), so that the error panels have data."""
    reset = (now - timedelta(days=12)).day  # twelve days into the cycle
    origin = now.date() - timedelta(days=40)
    return [
        SimProject(
            project_id="1460987654321098752",
            token="demo-token-production",  # noqa: S106 - simulator only
            apps={"28871234": 0.55, "28875678": 0.30, "29013456": 0.15},
            cap=2_000_000,
            cap_reset_day=min(reset, 28),
            mean_daily=72_000.0,
            growth_per_day=0.006,
            origin=origin,
            seed=7,
            credits={"prepaid_balance": 1450.0, "free_balance": 60.0},
        ),
        SimProject(
            project_id="1570012345678901248",
            token="demo-token-research",  # noqa: S106 - simulator only
            apps={"30112233": 0.8, "30114455": 0.2},
            cap=3_000_000,
            cap_reset_day=min(reset, 28),
            mean_daily=6_500.0,
            seed=11,
            origin=origin,
            credits=None,
            error_every=7,
            outage_every=60,
        ),
    ]
