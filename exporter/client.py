"""X API client: reads the token, sends requests, classifies answers, retries what is worth it."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TypeVar

import httpx

from exporter import __version__, logs
from exporter.config import TokenSource
from exporter.errors import ParseError, Reason, TokenError, UpstreamError
from exporter.parse import (
    USAGE_FIELDS,
    Credits,
    UsageReport,
    decode_json,
    parse_credits,
    parse_problem,
    parse_usage,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

USER_AGENT = f"x-usage-exporter/{__version__}"
_RETRYABLE = {Reason.SERVER_ERROR, Reason.TIMEOUT, Reason.NETWORK}
# Used when a rate-limit 429 carries no usable x-rate-limit-reset: the length of the window.
_DEFAULT_RATE_LIMIT_WAIT = 15 * 60.0


class Endpoint(StrEnum):
    USAGE = "usage"
    CREDITS = "credits"

    @property
    def path(self) -> str:
        return "/2/usage/tweets" if self is Endpoint.USAGE else "/2/usage/credits"


class CreditsUnavailable(Exception):
    """/2/usage/credits answered 404: the account has no credits endpoint."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    limit: int | None
    remaining: int | None
    reset: float | None  # epoch seconds

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimit:
        return cls(
            _int_header(headers, "x-rate-limit-limit"),
            _int_header(headers, "x-rate-limit-remaining"),
            _int_header(headers, "x-rate-limit-reset"),
        )


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request sent: what the metrics count."""

    endpoint: Endpoint
    code: str  # HTTP status, or "error" when no answer came
    reason: Reason | None
    rate_limit: RateLimit | None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float = 1.0
    cap: float = 30.0
    # Each retry spends one of the App's 50 requests per 15 minutes: a few are worth it, more
    # would starve the next polls.
    max_attempts: int = 4

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return rng.uniform(0, min(self.cap, self.base * 2**attempt))


def read_token(source: TokenSource, environ: Mapping[str, str] | None = None) -> str:
    """Read the bearer token now (files are re-read at every poll, so rotation needs no restart)."""
    if source.file is not None:
        try:
            token = source.file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(
                f"cannot read token {source.describe()}: {type(exc).__name__}"
            ) from None
    else:
        env = os.environ if environ is None else environ
        token = env.get(source.env or "", "").strip()
    if not token:
        raise TokenError(f"token {source.describe()} is empty")
    logs.register_secret(token)
    return token


class XApiClient:
    """Sends requests to one X API base URL. Thread-safe: one instance serves every project."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        retry: RetryPolicy | None = None,
        wait: Callable[[float], bool] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
            transport=transport,
            follow_redirects=False,
        )
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        # wait(seconds) sleeps and returns True when the exporter is shutting down.
        self._wait = wait or _sleep
        self._rng = random.Random()

    def close(self) -> None:
        self._http.close()

    def get(
        self,
        endpoint: Endpoint,
        token: str,
        *,
        deadline: float,
        attempts: list[Attempt],
        params: Mapping[str, str] | None = None,
    ) -> object:
        """The decoded JSON of a 2xx answer; retries 5xx, timeouts and network errors until
        `deadline` (time.monotonic()); raises UpstreamError or CreditsUnavailable."""
        tries = 0
        while True:
            try:
                return self._once(endpoint, token, params, attempts)
            except UpstreamError as exc:
                if exc.reason not in _RETRYABLE or tries + 1 >= self._retry.max_attempts:
                    raise
                delay = self._retry.delay(tries, self._rng)
                if time.monotonic() + delay + self._timeout > deadline:
                    raise
                tries += 1
                log.debug(
                    "retrying endpoint=%s reason=%s attempt=%d delay=%.2fs",
                    endpoint.value,
                    exc.reason.value,
                    tries,
                    delay,
                )
                if self._wait(delay):
                    raise

    def _once(
        self,
        endpoint: Endpoint,
        token: str,
        params: Mapping[str, str] | None,
        attempts: list[Attempt],
    ) -> object:
        try:
            response = self._http.get(
                endpoint.path,
                params=dict(params or {}),
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.TimeoutException:
            attempts.append(Attempt(endpoint, "error", Reason.TIMEOUT, None))
            raise UpstreamError(
                Reason.TIMEOUT, f"GET {endpoint.path}: no answer within {self._timeout:g}s"
            ) from None
        except httpx.HTTPError as exc:
            attempts.append(Attempt(endpoint, "error", Reason.NETWORK, None))
            raise UpstreamError(
                Reason.NETWORK, f"GET {endpoint.path}: {type(exc).__name__}"
            ) from None

        rate_limit = RateLimit.from_headers(response.headers)
        status = response.status_code
        if endpoint is Endpoint.CREDITS and status == 404:
            attempts.append(Attempt(endpoint, "404", None, rate_limit))
            raise CreditsUnavailable
        error = classify(endpoint, status, response.content, rate_limit)
        if error is None:
            try:
                payload = decode_json(response.content)
            except ParseError as exc:
                error = UpstreamError(Reason.PARSE, f"GET {endpoint.path}: {exc}", status=status)
        attempts.append(
            Attempt(endpoint, str(status), None if error is None else error.reason, rate_limit)
        )
        if error is not None:
            raise error
        return payload


def classify(
    endpoint: Endpoint, status: int, body: bytes, rate_limit: RateLimit
) -> UpstreamError | None:
    """Turn a non-2xx answer into a classified error (pure); None for 2xx."""
    if 200 <= status < 300:
        return None
    problem = parse_problem(body)
    what = f"GET {endpoint.path}: {status}"
    described = f"{what} {problem.title or 'error'}" + (
        f": {problem.detail}" if problem.detail else ""
    )
    if status == 401:
        return UpstreamError(Reason.UNAUTHORIZED, described, status=status)
    if status == 403:
        kind = problem.type.rsplit("/", 1)[-1]
        suffix = f" ({kind})" if kind else ""
        return UpstreamError(Reason.FORBIDDEN, described + suffix, status=status)
    if status == 429:
        if problem.is_usage_cap:
            return UpstreamError(Reason.USAGE_CAPPED, described, status=status)
        retry_at = rate_limit.reset
        if retry_at is None or retry_at <= time.time():
            retry_at = time.time() + _DEFAULT_RATE_LIMIT_WAIT
        return UpstreamError(Reason.RATE_LIMITED, described, status=status, retry_at=retry_at)
    if status == 402:
        # CreditsDepleted: every billed request fails until the account is topped up.
        return UpstreamError(Reason.CREDITS_DEPLETED, described, status=status)
    if status >= 500:
        return UpstreamError(Reason.SERVER_ERROR, described, status=status)
    return UpstreamError(Reason.CLIENT_ERROR, described, status=status)


def usage_params(days: int) -> dict[str, str]:
    return {"days": str(days), "usage.fields": ",".join(USAGE_FIELDS)}


def _parsed(
    endpoint: Endpoint, payload: object, parse: Callable[[object], T], attempts: list[Attempt]
) -> T:
    """The parsed answer; an unparsable one is a PARSE error, counted on the attempt that got it."""
    try:
        return parse(payload)
    except ParseError as exc:
        attempts[-1] = replace(attempts[-1], reason=Reason.PARSE)
        raise UpstreamError(Reason.PARSE, f"GET {endpoint.path}: {exc}") from None


def fetch_usage(
    client: XApiClient, token: str, days: int, *, deadline: float, attempts: list[Attempt]
) -> UsageReport:
    """GET /2/usage/tweets with every field, parsed."""
    payload = client.get(
        Endpoint.USAGE, token, deadline=deadline, attempts=attempts, params=usage_params(days)
    )
    return _parsed(Endpoint.USAGE, payload, parse_usage, attempts)


def fetch_credits(
    client: XApiClient, token: str, *, deadline: float, attempts: list[Attempt]
) -> Credits:
    """GET /2/usage/credits, parsed; CreditsUnavailable on a 404."""
    payload = client.get(Endpoint.CREDITS, token, deadline=deadline, attempts=attempts)
    return _parsed(Endpoint.CREDITS, payload, parse_credits, attempts)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False
