"""The exporter's one small error hierarchy; caught at the edges (CLI, poll job, web handler)."""

from __future__ import annotations

import re
from enum import StrEnum


class ExporterError(Exception):
    """Base of every error the exporter raises on purpose."""


class ConfigError(ExporterError):
    """The configuration is invalid; `problems` holds one line per problem, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class Reason(StrEnum):
    """Why a request to the X API failed: the `reason` label of the error metrics."""

    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    USAGE_CAPPED = "usage_capped"
    SERVER_ERROR = "server_error"
    CLIENT_ERROR = "client_error"  # any other 4xx, e.g. a 404 from a wrong api_base_url
    TIMEOUT = "timeout"
    NETWORK = "network"
    PARSE = "parse"
    TOO_LARGE = "too_large"  # an answer beyond a bound: body size, App count, id length
    CREDITS_DEPLETED = "credits_depleted"  # 402 CreditsDepleted: prepaid credits used up


class UpstreamError(ExporterError):
    """A request to the X API failed. The message never contains the bearer token."""

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        status: int | None = None,
        retry_at: float | None = None,
    ) -> None:
        self.reason = reason
        self.status = status
        # For rate limits: the epoch second before which the token must not be used again.
        self.retry_at = retry_at
        super().__init__(message)


class TokenError(ExporterError):
    """The bearer token could not be read from its file or environment variable."""


class ParseError(ExporterError):
    """An X API answer is not the documented JSON; the message names the field path."""


def describe(exc: BaseException) -> str:
    """What happened, in the words a user reads ("connection refused", "no such file or
    directory", "is a directory"), never the exception's class name."""
    seen: BaseException | None = exc
    for _ in range(8):  # httpx wraps httpcore, which wraps the socket's OSError
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror[:1].lower() + seen.strerror[1:]
        seen = seen.__cause__ or seen.__context__
    text = re.sub(r"^\[Errno -?\d+\] ", "", str(exc)).strip().rstrip(".")
    if text:
        return text[:200]
    if isinstance(exc, TimeoutError):
        return "timed out"
    # Nothing said: the kind of failure in plain words (ReadError: "read error").
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", type(exc).__name__).lower()
