"""X API client: reads the token, sends requests, classifies answers, retries what is worth it."""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, TypeVar

import httpcore
import httpx

from exporter import __version__, logs
from exporter.config import (
    MAX_TOKEN_FILE_BYTES,
    NOT_A_HEADER_VALUE,
    TokenSource,
    is_bearer_token,
    read_small_file,
)
from exporter.errors import ParseError, Reason, TokenError, UpstreamError, describe
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
# The rate limit's window: the wait after a rate-limit 429 without a usable reset time, and the
# longest wait any header can impose (a reset years ahead would stop polling for good).
RATE_LIMIT_WINDOW = 15 * 60.0
# Bounds on an answer (docs/security.md): far above any real answer (90 days of a few Apps is
# tens of KiB), far below what would hurt the exporter. Crossing one is Reason.TOO_LARGE.
MAX_BODY_BYTES = 1024 * 1024  # decompressed
MAX_ID_CHARS = 64  # project_id, app_id: labels and page text; real ids have about 20 digits
MAX_APPS = 100
MAX_DAYS = 100  # per series; the API sends at most 90
MAX_SHOWN_CHARS = 200  # upstream text (an error's title and detail) in a message
_EPOCH_DIGITS = 12  # a rate-limit reset beyond this is no time at all
_DECODING = threading.BoundedSemaphore(2)


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
    retry_after: float | None = None  # epoch seconds, from Retry-After

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimit:
        return cls(
            _int_header(headers, "x-rate-limit-limit"),
            _int_header(headers, "x-rate-limit-remaining"),
            _int_header(headers, "x-rate-limit-reset"),
            _retry_after(headers.get("retry-after"), time.time()),
        )

    def retry_at(self, now: float) -> float:
        """When a token that got a rate-limit 429 may be used again: the later of the two
        headers' times, the window's length when neither is usable, never beyond one window.
        A time less than one window past is a reset that just happened (whole epoch seconds,
        clock skew): the next poll may ask again. One further past is nonsense, read as unusable."""
        times = [
            t
            for t in (self.reset, self.retry_after)
            if t is not None and t > now - RATE_LIMIT_WINDOW
        ]
        if not times:
            return now + RATE_LIMIT_WINDOW
        return min(max(*times, now), now + RATE_LIMIT_WINDOW)


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
            token = read_small_file(source.file, MAX_TOKEN_FILE_BYTES).strip()
        except UnicodeDecodeError:
            raise TokenError(f"cannot read token {source.describe()}: not UTF-8") from None
        except ValueError as exc:
            raise TokenError(f"cannot read token {source.describe()}: {exc}") from None
        except OSError as exc:
            raise TokenError(f"cannot read token {source.describe()}: {describe(exc)}") from None
    else:
        env = os.environ if environ is None else environ
        token = env.get(source.env or "", "").strip()
    if not token:
        raise TokenError(f"token {source.describe()} is empty")
    if not is_bearer_token(token):
        raise TokenError(f"token {source.describe()} {NOT_A_HEADER_VALUE}")
    logs.register_secret(token)
    return token


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the calling thread's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, backend: _DeadlineBackend) -> None:
        self._inner = inner
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._backend.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._backend.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = self._backend.clamp(timeout, httpcore.ConnectTimeout)
        return self._backend.track(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def abort(self) -> None:
        """Shut the socket down: a read blocked on it in another thread returns at once."""
        sock = self._inner.get_extra_info("socket")
        if sock is not None:
            with suppress(OSError):  # socket's shutdown, not SSLSocket's: no TLS state touched
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own socket backend, with two additions: every socket operation ends by the
    deadline the calling thread set (httpx's timeouts bound each read, so a body trickled a byte at
    a time would never end), and abort() cuts every open connection when the exporter stops."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()
        self._local = threading.local()
        self._streams: weakref.WeakSet[_DeadlineStream] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._aborted = False

    @contextmanager
    def deadline(self, at: float) -> Iterator[None]:
        """Bound this thread's requests to end by `at` (time.monotonic())."""
        self._local.at = at
        try:
            yield
        finally:
            self._local.at = None

    def clamp(self, timeout: float | None, error: type[Exception]) -> float | None:
        at: float | None = getattr(self._local, "at", None)
        if self._aborted:
            raise error("the exporter is stopping")
        if at is None:
            return timeout
        left = at - time.monotonic()
        if left <= 0:
            raise error("request_timeout reached")
        return left if timeout is None else min(timeout, left)

    def track(self, stream: httpcore.NetworkStream) -> _DeadlineStream:
        wrapped = _DeadlineStream(stream, self)
        with self._lock:
            self._streams.add(wrapped)
        if self._aborted:  # aborted while this one was connecting
            wrapped.abort()
        return wrapped

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        timeout = self.clamp(timeout, httpcore.ConnectTimeout)
        return self.track(
            self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)

    def abort(self) -> None:
        self._aborted = True
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.abort()


def _transport(backend: _DeadlineBackend) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport()
    # httpx's transport takes no network backend, its httpcore pool does: swap in a pool built
    # with httpx's own TLS and pool defaults and our backend.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        # httpx's pool defaults: httpcore's own 10 connections would queue the 11th project.
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=backend,
    )
    return transport


class XApiClient:
    """Sends requests to one X API base URL. Thread-safe: one instance serves every project.

    `request_timeout` bounds each whole exchange (connect, send, headers, body); a body is read
    up to MAX_BODY_BYTES, decompressed included. Closing waits for the polls that lease it."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        retry: RetryPolicy | None = None,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self._backend = _DeadlineBackend()
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            # gzip only: its inflation is bounded below; httpx would also offer br and zstd.
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip"},
            transport=_transport(self._backend),
            follow_redirects=False,
        )
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        # wait(seconds) sleeps and returns True when the exporter is shutting down.
        self._wait = wait or _sleep
        self._rng = random.Random()
        self._leases = 0
        self._closing = False
        self._lease_lock = threading.Lock()

    @contextmanager
    def lease(self) -> Iterator[XApiClient]:
        """Use the client for one poll: close() waits until every lease has ended."""
        with self._lease_lock:
            self._leases += 1
        try:
            yield self
        finally:
            with self._lease_lock:
                self._leases -= 1
                close_now = self._closing and self._leases == 0
            if close_now:
                self._http.close()

    def close(self) -> None:
        """Close now, or when the last running poll ends (a reload must not cut a poll short)."""
        with self._lease_lock:
            self._closing = True
            close_now = self._leases == 0
        if close_now:
            self._http.close()

    def abort(self) -> None:
        """Cut every request in flight and refuse new ones: the exporter is stopping."""
        self._backend.abort()
        self.close()

    def get(
        self,
        endpoint: Endpoint,
        token: str,
        parse: Callable[[object], T],
        *,
        deadline: float,
        attempts: list[Attempt],
        params: Mapping[str, str] | None = None,
    ) -> T:
        """A 2xx answer, parsed by `parse` (whose ParseError is a PARSE error); retries 5xx,
        timeouts and network errors until `deadline` (time.monotonic()); raises UpstreamError or
        CreditsUnavailable."""
        tries = 0
        while True:
            try:
                return self._once(endpoint, token, parse, params, attempts, deadline)
            except UpstreamError as exc:
                if exc.reason not in _RETRYABLE or tries + 1 >= self._retry.max_attempts:
                    raise
                delay = self._retry.delay(tries, self._rng)
                if time.monotonic() + delay + self._timeout > deadline:
                    raise
                tries += 1
                log.debug(
                    "retrying",
                    extra=logs.fields(
                        endpoint=endpoint.value,
                        reason=exc.reason.value,
                        attempt=tries,
                        delay=logs.seconds(delay),
                    ),
                )
                if self._wait(delay):
                    raise

    def _once(
        self,
        endpoint: Endpoint,
        token: str,
        parse: Callable[[object], T],
        params: Mapping[str, str] | None,
        attempts: list[Attempt],
        deadline: float,
    ) -> T:
        try:
            with (
                self._backend.deadline(min(deadline, time.monotonic() + self._timeout)),
                self._http.stream(
                    "GET",
                    endpoint.path,
                    params=dict(params or {}),
                    headers={"Authorization": f"Bearer {token}"},
                ) as response,
            ):
                rate_limit = RateLimit.from_headers(response.headers)
                status = response.status_code
                try:
                    raw, gzipped = _read_raw(endpoint, response)
                except UpstreamError as exc:
                    attempts.append(Attempt(endpoint, str(status), exc.reason, rate_limit))
                    raise
        except httpx.TimeoutException:
            attempts.append(Attempt(endpoint, "error", Reason.TIMEOUT, None))
            raise UpstreamError(
                Reason.TIMEOUT, f"GET {endpoint.path}: no complete answer within {self._timeout:g}s"
            ) from None
        except httpx.HTTPError as exc:
            attempts.append(Attempt(endpoint, "error", Reason.NETWORK, None))
            raise UpstreamError(
                Reason.NETWORK, f"GET {endpoint.path}: {safe_text(describe(exc))}"
            ) from None

        if endpoint is Endpoint.CREDITS and status == 404:
            attempts.append(Attempt(endpoint, "404", None, rate_limit))
            raise CreditsUnavailable
        try:
            # One answer inflated and parsed at a time: its objects take several times its size,
            # and twenty projects answering at once must not take twenty times that.
            with _DECODING:
                body = _inflate(endpoint, status, raw) if gzipped else raw
                error = classify(endpoint, status, body, rate_limit)
                if error is not None:
                    raise error
                try:
                    result = parse(decode_json(body))
                except ParseError as exc:
                    what = f"GET {endpoint.path}: {safe_text(str(exc))}"
                    raise UpstreamError(Reason.PARSE, what, status=status) from None
        except UpstreamError as exc:
            attempts.append(Attempt(endpoint, str(status), exc.reason, rate_limit))
            raise
        attempts.append(Attempt(endpoint, str(status), None, rate_limit))
        return result


def _read_raw(endpoint: Endpoint, response: httpx.Response) -> tuple[bytes, bool]:
    """The body as sent, at most MAX_BODY_BYTES of it, and whether it is gzipped; TOO_LARGE when
    more is announced or sent."""
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length[:12]) > MAX_BODY_BYTES:
        raise _too_large(endpoint, response.status_code)
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in {"identity", "gzip", "x-gzip"}:
        raise UpstreamError(
            Reason.PARSE,
            f"GET {endpoint.path}: unsupported content-encoding {safe_text(encoding)}",
            status=response.status_code,
        )
    raw = bytearray()
    for chunk in response.iter_raw():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _too_large(endpoint, response.status_code)
    return bytes(raw), encoding != "identity"


def _inflate(endpoint: Endpoint, status: int, raw: bytes) -> bytes:
    """A gzip body, inflated to at most MAX_BODY_BYTES: zlib's max_length stops a gzip bomb after
    that many bytes, not after gigabytes."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, MAX_BODY_BYTES + 1)
    except zlib.error:
        raise UpstreamError(
            Reason.PARSE, f"GET {endpoint.path}: broken gzip body", status=status
        ) from None
    if len(body) > MAX_BODY_BYTES:
        raise _too_large(endpoint, status)
    return body


def _too_large(endpoint: Endpoint, status: int) -> UpstreamError:
    return UpstreamError(
        Reason.TOO_LARGE,
        f"GET {endpoint.path}: answer larger than {MAX_BODY_BYTES} bytes",
        status=status,
    )


def classify(
    endpoint: Endpoint, status: int, body: bytes, rate_limit: RateLimit
) -> UpstreamError | None:
    """Turn a non-2xx answer into a classified error (pure); None for 2xx."""
    if 200 <= status < 300:
        return None
    problem = parse_problem(body)
    what = f"GET {endpoint.path}: {status}"
    described = f"{what} {safe_text(problem.title or 'error')}" + (
        f": {safe_text(problem.detail)}" if problem.detail else ""
    )
    if status == 401:
        return UpstreamError(Reason.UNAUTHORIZED, described, status=status)
    if status == 403:
        kind = safe_text(problem.type.rsplit("/", 1)[-1])
        suffix = f" ({kind})" if kind else ""
        return UpstreamError(Reason.FORBIDDEN, described + suffix, status=status)
    if status == 429:
        if problem.is_usage_cap:
            return UpstreamError(Reason.USAGE_CAPPED, described, status=status)
        retry_at = rate_limit.retry_at(time.time())
        return UpstreamError(Reason.RATE_LIMITED, described, status=status, retry_at=retry_at)
    if status == 402:
        # CreditsDepleted: every billed request fails until the account is topped up.
        return UpstreamError(Reason.CREDITS_DEPLETED, described, status=status)
    if status >= 500:
        return UpstreamError(Reason.SERVER_ERROR, described, status=status)
    return UpstreamError(Reason.CLIENT_ERROR, described, status=status)


def usage_params(days: int) -> dict[str, str]:
    return {"days": str(days), "usage.fields": ",".join(USAGE_FIELDS)}


def _bounded_usage(payload: object) -> UsageReport:
    """parse_usage, and TOO_LARGE when the answer crosses a bound (its ids become labels)."""
    report = parse_usage(payload)
    problem = _oversized(report)
    if problem is not None:
        raise UpstreamError(Reason.TOO_LARGE, f"GET {Endpoint.USAGE.path}: {problem}")
    return report


def _oversized(report: UsageReport) -> str | None:
    if len(report.apps) > MAX_APPS:
        return f"{len(report.apps)} Apps, more than {MAX_APPS}"
    for series in (report.daily, *report.apps.values()):
        if len(series) > MAX_DAYS:
            return f"{len(series)} days in one series, more than {MAX_DAYS}"
    for value in (report.project_id or "", *report.apps):
        if len(value) > MAX_ID_CHARS:
            return f"an id of {len(value)} characters, more than {MAX_ID_CHARS}"
        if logs.redact(value) != value:
            return "an id that holds a bearer token"
    return None


def fetch_usage(
    client: XApiClient, token: str, days: int, *, deadline: float, attempts: list[Attempt]
) -> UsageReport:
    """GET /2/usage/tweets with every field, parsed and within the bounds."""
    return client.get(
        Endpoint.USAGE,
        token,
        _bounded_usage,
        deadline=deadline,
        attempts=attempts,
        params=usage_params(days),
    )


def fetch_credits(
    client: XApiClient, token: str, *, deadline: float, attempts: list[Attempt]
) -> Credits:
    """GET /2/usage/credits, parsed; CreditsUnavailable on a 404."""
    return client.get(Endpoint.CREDITS, token, parse_credits, deadline=deadline, attempts=attempts)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    """A non-negative whole number of at most 12 digits; None when absent or anything else."""
    value = (headers.get(name) or "").strip()
    if not value.isascii() or not value.isdigit() or len(value) > _EPOCH_DIGITS:
        return None
    return int(value)


def _retry_after(value: str | None, now: float) -> float | None:
    """Retry-After (seconds, or an HTTP date) as epoch seconds; None when absent or unreadable."""
    value = (value or "").strip()
    if value.isascii() and value.isdigit():
        return now + float(value[:_EPOCH_DIGITS])
    try:
        return parsedate_to_datetime(value).timestamp() if value else None
    except (ValueError, TypeError, OverflowError):
        return None


def safe_text(text: str) -> str:
    """Upstream text as a message may carry it: no token, no control character, short."""
    text = logs.redact(text)[:MAX_SHOWN_CHARS]
    return "".join(c if c.isprintable() else " " for c in text)


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False
