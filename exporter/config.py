"""Configuration: YAML (or X_BEARER_TOKEN alone) into frozen, validated objects."""

from __future__ import annotations

import errno
import math
import os
import re
import reprlib
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from exporter.errors import ConfigError, describe

DEFAULT_API_BASE_URL = "https://api.x.com"
DEFAULT_PROJECT_NAME = "default"
TOKEN_ENV_VAR = "X_BEARER_TOKEN"  # noqa: S105 - a variable name, not a token
# 50 requests per 15 minutes per App: one poll every 18 s uses the whole budget.
RATE_LIMIT_MIN_INTERVAL = 15 * 60 / 50
# A poll may send up to four requests (retries) before its deadline, just under poll_interval.
POLL_REQUESTS_PER_INTERVAL = 4
# The longest billing cycle (31 days, today included): less history misses the cycle's first days.
LONGEST_CYCLE_DAYS = 31

E = TypeVar("E", bound="StrEnum")

# Bounds on what the operator's files may hold (docs/security.md). A token is about 100 bytes and a
# config a few KiB; the limits leave room for that and refuse devices, FIFOs and runaway files.
MAX_TOKEN_FILE_BYTES = 4096
MAX_PROJECTS = 1000  # docs/performance.md measures 1000; more belong in another shard
MAX_PROJECT_NAME_CHARS = 128  # a label value on every series and a heading on the page
MAX_DURATION_SECONDS = 86_400.0  # a day: poll_interval and request_timeout
MAX_USD = 1e12  # budgets, limits and prices: a guard against absurd numbers, not a business limit
MAX_CONFIG_FILE_BYTES = 1024 * 1024
# YAML aliases and merges let a small document describe a huge graph: legitimate configs use a
# handful, and the limits stop the expansion before any code walks it.
MAX_YAML_ALIASES = 64
MAX_YAML_DEPTH = 32
MAX_YAML_MAPPING_KEYS = 10_000

_DURATION_RE = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_DURATION_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


class CapResetDayMeans(StrEnum):
    """How to read the API's `cap_reset_day` (SPEC section 1 documents both readings)."""

    DAY_OF_MONTH = "day_of_month"
    DAYS_REMAINING = "days_remaining"


class CreditsMode(StrEnum):
    """Whether to poll /2/usage/credits: auto stops asking after a 404."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class TokenSource:
    """Where a bearer token lives: a file path or an environment variable name, never the token."""

    file: Path | None = None
    env: str | None = None

    def describe(self) -> str:
        return f"file {self.file}" if self.file is not None else f"environment variable {self.env}"


@dataclass(frozen=True, slots=True)
class Pricing:
    post_read_usd: float = 0.005
    owned_read_usd: float = 0.001


@dataclass(frozen=True, slots=True)
class ProjectConfig:
    name: str
    token: TokenSource
    budget_usd: float | None = None
    spending_limit_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Config:
    projects: tuple[ProjectConfig, ...]
    api_base_url: str = DEFAULT_API_BASE_URL
    poll_interval: float = 300.0
    request_timeout: float = 10.0
    history_days: int = 90
    cap_reset_day_means: CapResetDayMeans = CapResetDayMeans.DAY_OF_MONTH
    credits: CreditsMode = CreditsMode.AUTO
    pricing: Pricing = field(default_factory=Pricing)
    source: str = "defaults"

    def warnings(self) -> list[str]:
        """Problems that do not stop the exporter but that an operator should see at start."""
        found = []
        if self.poll_interval < RATE_LIMIT_MIN_INTERVAL:
            found.append(
                f"poll_interval: {format_duration(self.poll_interval)} polls more often than the "
                f"X API's 50 requests per 15 minutes allow (at least "
                f"{format_duration(RATE_LIMIT_MIN_INTERVAL)}); fine for a simulator only"
            )
        if self.request_timeout * POLL_REQUESTS_PER_INTERVAL > self.poll_interval:
            found.append(
                f"request_timeout: {format_duration(self.request_timeout)} is not well below "
                f"poll_interval ({format_duration(self.poll_interval)}): a poll that retries "
                f"sends up to {POLL_REQUESTS_PER_INTERVAL} requests and must end within "
                f"poll_interval; keep request_timeout at most "
                f"{format_duration(self.poll_interval / POLL_REQUESTS_PER_INTERVAL)}"
            )
        if self.history_days < LONGEST_CYCLE_DAYS:
            found.append(
                f"history_days: {self.history_days} days cannot hold a whole billing cycle (up "
                f"to {LONGEST_CYCLE_DAYS} days): per-App consumption (xapi_app_posts_consumed) "
                f"and, when an answer has no project_usage, the project's consumption would "
                f"miss the cycle's first days; use at least {LONGEST_CYCLE_DAYS}"
            )
        for index, project in enumerate(self.projects):
            budget, limit = project.budget_usd, project.spending_limit_usd
            if budget is not None and limit is not None and limit < budget:
                found.append(
                    f"projects[{index}].spending_limit_usd: {limit:,.10g} is below budget_usd "
                    f"{budget:,.10g} ({project.name}): the X API blocks every request at the "
                    f"spending limit, so the budget can never be reached"
                )
        return found


def read_small_file(path: Path, limit: int) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes. Never blocks: a FIFO, a device or
    a directory is refused at once, not read. OSError, UnicodeDecodeError or ValueError (saying
    what was refused) otherwise."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > limit:
            raise ValueError(f"larger than {limit} bytes")
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > limit:  # it grew while being read
            raise ValueError(f"larger than {limit} bytes")
    finally:
        os.close(fd)
    return data.decode("utf-8")


class _BoundedLoader(yaml.SafeLoader):
    """pyyaml's SafeLoader with a ceiling on aliases, nesting and merged keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                self._refuse(f"more than {MAX_YAML_ALIASES} aliases")
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                self._refuse(f"nested deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def flatten_mapping(self, node: Any) -> None:
        super().flatten_mapping(node)
        if len(node.value) > MAX_YAML_MAPPING_KEYS:
            self._refuse(f"a mapping with more than {MAX_YAML_MAPPING_KEYS} keys")

    def _refuse(self, problem: str) -> None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        raise yaml.composer.ComposerError(None, None, problem, mark)


def load_yaml(text: str) -> object:
    """One YAML document, parsed safely and within the bounds above; yaml.YAMLError otherwise."""
    return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 60
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict = 2, 3, 3


def is_bearer_token(text: str) -> bool:
    """Whether `text` (already stripped) can go into an Authorization header as it is: visible
    ASCII only, no space or line break inside. Anything else, the HTTP library refuses while
    quoting the header, so it is refused here first, and never quoted."""
    return bool(text) and all("!" <= c <= "~" for c in text)


NOT_A_HEADER_VALUE = (
    "is not a bearer token: it holds a space, a line break or a character outside visible ASCII"
)
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def shown(value: object) -> str:
    """A value as a message may quote it: a short repr, whatever its size or nesting."""
    return _SHOWN.repr(value)


def parse_duration(text: str) -> float:
    """A Prometheus duration (`30s`, `5m`, `1h30m`, `250ms`) in seconds; ValueError if malformed."""
    match = _DURATION_RE.match(text)
    if not text or match is None:
        raise ValueError(f"{shown(text)} is not a duration such as 30s, 5m or 1h")
    return sum(int(g) * unit for g, unit in zip(match.groups(), _DURATION_UNITS, strict=True) if g)


def format_duration(seconds: float) -> str:
    """The shortest Prometheus-style text for a duration, for messages."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    parts = []
    rest = round(seconds)
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


class _Checker:
    """Collects every problem with its dotted key path, so that all are reported at once."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def mapping(self, value: object, path: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(path, f"must be a mapping, got {_type_name(value)}")
            return {}
        for key in value:
            if key not in allowed:
                hint = ""
                if key in {"bearer_token", "token"}:
                    hint = (
                        " (tokens are never written inline: use bearer_token_file or "
                        "bearer_token_env)"
                    )
                self.fail(_join(path, shown_key(key)), f"unknown key{hint}")
        return value

    def duration(self, value: object, path: str, default: float) -> float:
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(path, f"must be a duration such as 30s or 5m, got {_type_name(value)}")
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            unsigned = value.removeprefix("-")
            negative = unsigned != value and unsigned and _DURATION_RE.match(unsigned)
            self.fail(path, "must be greater than 0" if negative else str(exc))
            return default
        if seconds <= 0:
            self.fail(path, "must be greater than 0")
            return default
        if seconds > MAX_DURATION_SECONDS:
            self.fail(path, f"must be at most {format_duration(MAX_DURATION_SECONDS)}")
            return default
        return seconds

    def number(self, value: object, path: str, *, positive: bool = False) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, f"must be a number, got {_type_name(value)}")
            return None
        if isinstance(value, float) and math.isnan(value):
            self.fail(path, "must be a number, got nan")
            return None
        if value < 0 or (positive and value == 0):
            self.fail(path, "must be greater than 0" if positive else "must not be negative")
            return None
        if value > MAX_USD:  # an int of any size compares exactly; inf is caught here too
            self.fail(path, f"must be at most {MAX_USD:,.0f}")
            return None
        return float(value)

    def choice(self, value: object, path: str, enum: type[E], default: E) -> E:
        if value is None:
            return default
        try:
            return enum(value if isinstance(value, str) else "")
        except ValueError:
            names = ", ".join(member.value for member in enum)
            self.fail(path, f"must be one of {names}, got {shown(value)}")
            return default


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def shown_key(key: object) -> str:
    return key if isinstance(key, str) and len(key) <= 60 else shown(key)


def _type_name(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


_TOP_KEYS = {
    "api_base_url",
    "poll_interval",
    "request_timeout",
    "history_days",
    "cap_reset_day_means",
    "credits",
    "pricing",
    "projects",
}
_PROJECT_KEYS = {
    "name",
    "bearer_token_file",
    "bearer_token_env",
    "budget_usd",
    "spending_limit_usd",
}
_PRICING_KEYS = {"post_read_usd", "owned_read_usd"}


def parse_config(
    data: object, *, source: str, base_dir: Path, environ: Mapping[str, str]
) -> Config:
    """Validate a parsed YAML document; raise ConfigError listing every problem."""
    if data is None:
        raise ConfigError(["the file is empty: it needs at least a projects list"])
    if not isinstance(data, Mapping):
        raise ConfigError(
            [
                f"the top level must be a mapping of settings (projects, poll_interval, ...), "
                f"got {_type_name(data)}"
            ]
        )
    check = _Checker()
    top = check.mapping(data, "", _TOP_KEYS)

    api_base_url = top.get("api_base_url", DEFAULT_API_BASE_URL)
    if not isinstance(api_base_url, str) or not re.match(r"^https?://[^/\s]+", api_base_url):
        check.fail("api_base_url", f"must be an http(s) URL, got {shown(api_base_url)}")
        api_base_url = DEFAULT_API_BASE_URL

    history_days = top.get("history_days", 90)
    if isinstance(history_days, bool) or not isinstance(history_days, int):
        check.fail("history_days", f"must be a whole number, got {_type_name(history_days)}")
        history_days = 90
    elif not 1 <= history_days <= 90:
        check.fail(
            "history_days", f"must be between 1 and 90 (the API's limit), got {history_days}"
        )
        history_days = 90

    pricing_raw = check.mapping(top.get("pricing", {}), "pricing", _PRICING_KEYS)
    defaults = Pricing()
    post = check.number(pricing_raw.get("post_read_usd"), "pricing.post_read_usd")
    owned = check.number(pricing_raw.get("owned_read_usd"), "pricing.owned_read_usd")
    pricing = Pricing(
        post_read_usd=defaults.post_read_usd if post is None else post,
        owned_read_usd=defaults.owned_read_usd if owned is None else owned,
    )

    poll_interval = check.duration(top.get("poll_interval"), "poll_interval", 300.0)
    request_timeout = check.duration(top.get("request_timeout"), "request_timeout", 10.0)
    means = check.choice(
        top.get("cap_reset_day_means"),
        "cap_reset_day_means",
        CapResetDayMeans,
        CapResetDayMeans.DAY_OF_MONTH,
    )
    credits_raw = top.get("credits")
    if isinstance(credits_raw, bool):  # YAML 1.1 reads an unquoted on/off as a boolean
        credits_raw = "on" if credits_raw else "off"
    credits = check.choice(credits_raw, "credits", CreditsMode, CreditsMode.AUTO)
    projects = _parse_projects(check, top.get("projects"), base_dir, environ)
    config = Config(
        projects=tuple(projects),
        api_base_url=api_base_url.rstrip("/"),
        poll_interval=poll_interval,
        request_timeout=request_timeout,
        history_days=history_days,
        cap_reset_day_means=means,
        credits=credits,
        pricing=pricing,
        source=source,
    )
    if check.problems:
        raise ConfigError(check.problems)
    return config


def _parse_projects(
    check: _Checker, raw: object, base_dir: Path, environ: Mapping[str, str]
) -> list[ProjectConfig]:
    if raw is None:
        check.fail("projects", "at least one project is needed")
        return []
    if not isinstance(raw, list) or not raw:
        check.fail("projects", "must be a non-empty list of projects")
        return []
    if len(raw) > MAX_PROJECTS:
        check.fail("projects", f"{len(raw)} projects: at most {MAX_PROJECTS} per exporter")
        return []
    projects: list[ProjectConfig] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        path = f"projects[{index}]"
        entry = check.mapping(item, path, _PROJECT_KEYS)
        if not isinstance(item, Mapping):
            continue
        # A bad name is one problem among the project's others: report them all.
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            check.fail(f"{path}.name", "must be a non-empty string")
            name = None
        elif len(name) > MAX_PROJECT_NAME_CHARS or not name.isprintable():
            check.fail(
                f"{path}.name",
                f"must be at most {MAX_PROJECT_NAME_CHARS} printable characters, got {shown(name)}",
            )
            name = None
        elif name in seen:
            check.fail(f"{path}.name", f"duplicate project name {shown(name)}")
        else:
            seen.add(name)
        token = _token_source(check, entry, path, base_dir, environ)
        budget = check.number(entry.get("budget_usd"), f"{path}.budget_usd", positive=True)
        limit = check.number(
            entry.get("spending_limit_usd"), f"{path}.spending_limit_usd", positive=True
        )
        if token is not None and name is not None:
            projects.append(ProjectConfig(name, token, budget, limit))
    return projects


def _token_source(
    check: _Checker,
    entry: Mapping[str, Any],
    path: str,
    base_dir: Path,
    environ: Mapping[str, str],
) -> TokenSource | None:
    file_value, env_value = entry.get("bearer_token_file"), entry.get("bearer_token_env")
    if (file_value is None) == (env_value is None):
        check.fail(path, "needs exactly one of bearer_token_file or bearer_token_env")
        return None
    if file_value is not None:
        key = f"{path}.bearer_token_file"
        if not isinstance(file_value, str) or not file_value:
            check.fail(key, "must be a file path")
            return None
        token_path = Path(file_value)
        if not token_path.is_absolute():
            token_path = base_dir / token_path
        try:
            content = read_small_file(token_path, MAX_TOKEN_FILE_BYTES)
        except FileNotFoundError:
            check.fail(key, f"no such file: {token_path}")
            return None
        except ValueError as exc:  # UnicodeDecodeError is one, with a long text
            reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
            check.fail(key, f"cannot read {token_path}: {reason}")
            return None
        except OSError as exc:
            check.fail(key, f"cannot read {token_path}: {describe(exc)}")
            return None
        if not content.strip():
            check.fail(key, f"{token_path} is empty")
            return None
        if not is_bearer_token(content.strip()):
            check.fail(key, f"{token_path} {NOT_A_HEADER_VALUE}")
            return None
        return TokenSource(file=token_path)
    key = f"{path}.bearer_token_env"
    if not isinstance(env_value, str) or not _ENV_NAME_RE.fullmatch(env_value):
        # Never quoted: a token pasted here by mistake would be echoed.
        check.fail(key, "must be an environment variable name (letters, digits, _; 128 at most)")
        return None
    value = environ.get(env_value, "").strip()
    if not value:
        check.fail(key, f"environment variable {env_value} is not set or empty")
        return None
    if not is_bearer_token(value):
        check.fail(key, f"environment variable {env_value} {NOT_A_HEADER_VALUE}")
        return None
    return TokenSource(env=env_value)


def load_config(path: str | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the config file, or fall back to X_BEARER_TOKEN alone when no file is given."""
    env = os.environ if environ is None else environ
    if path is None:
        if not env.get(TOKEN_ENV_VAR, "").strip():
            raise ConfigError(
                [f"--config.file: no config file given and {TOKEN_ENV_VAR} is not set"]
            )
        project = ProjectConfig(DEFAULT_PROJECT_NAME, TokenSource(env=TOKEN_ENV_VAR))
        return Config(projects=(project,), source=TOKEN_ENV_VAR)
    file = Path(path)
    try:
        text = read_small_file(file, MAX_CONFIG_FILE_BYTES)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: cannot read: not UTF-8"]) from None
    except ValueError as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {describe(exc)}"]) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = str(getattr(exc, "problem", None) or "invalid YAML")[:200]
        raise ConfigError([f"{path}: invalid YAML{where}: {problem}"]) from None
    try:
        return parse_config(data, source=path, base_dir=file.parent, environ=env)
    except ConfigError as exc:
        raise ConfigError([f"{path}: {problem}" for problem in exc.problems]) from None
