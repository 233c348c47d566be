"""Immutable per-project snapshots, the pure builder that makes them, the store that swaps them."""

from __future__ import annotations

import threading
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType

from exporter import billing
from exporter.config import CapResetDayMeans, ProjectConfig
from exporter.forecast import KEEP_DAYS, Forecast, daily_baseline, forecast_cycle
from exporter.parse import Credits, UsageReport

UNKNOWN_PROJECT_ID = "unknown"
_DAY = timedelta(days=1)
# The API sends at most 90 days; days further back, or after today, are not real usage data.
HISTORY_WINDOW = timedelta(days=100)


@dataclass(frozen=True, slots=True)
class AppUsage:
    app_id: str
    consumed: int  # this billing cycle
    today: int


@dataclass(frozen=True, slots=True)
class UsageSnapshot:
    """Everything one successful usage answer says about a project, at `taken_at`."""

    project_id: str
    taken_at: datetime
    cycle: billing.Cycle
    cap: int | None
    cap_reset_day: int | None  # raw, as the API sent it
    consumed: int
    consumed_today: int | None  # None: the answer listed no day, so today's share is unknown
    daily_baseline: float | None
    forecast: Forecast
    post_read_usd: float
    apps: tuple[AppUsage, ...]
    daily: Mapping[date, int]
    missing: tuple[str, ...]
    invalid: tuple[str, ...] = ()  # fields the answer carried but not as documented
    api_errors: tuple[str, ...] = ()  # titles of an `errors` list beside `data`

    @property
    def today(self) -> date:
        return self.taken_at.date()

    @property
    def newest_day(self) -> date | None:
        return max(self.daily) if self.daily else None

    @property
    def newest_day_timestamp(self) -> float | None:
        newest = self.newest_day
        if newest is None:
            return None
        return datetime(newest.year, newest.month, newest.day, tzinfo=UTC).timestamp()

    @property
    def utilization(self) -> float | None:
        return self.consumed / self.cap if self.cap else None

    @property
    def spend(self) -> float:
        return billing.spend_usd(self.consumed, self.post_read_usd)

    @property
    def projected_spend(self) -> float:
        posts = billing.billable_projection(self.forecast.projected, self.consumed, self.cap)
        return billing.spend_usd(posts, self.post_read_usd)


@dataclass(frozen=True, slots=True)
class CreditsSnapshot:
    available: bool
    balance: Credits | None = None
    depletion: datetime | None = None
    read_at: datetime | None = None  # the poll that read `balance`: a later failure keeps both


@dataclass(frozen=True, slots=True)
class PollStatus:
    """How the last poll of the usage endpoint went."""

    success: bool | None = None  # None until the first poll ended
    error_reason: str | None = None
    error_message: str | None = None
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    duration: float | None = None
    rate_limit_remaining: int | None = None
    rate_limit_reset: float | None = None
    usage_capped: bool = False  # the X API answered UsageCapExceeded ...
    capped_until: datetime | None = None  # ... and that holds until this cycle end at most
    credits_depleted: bool = False  # the X API answered 402 CreditsDepleted

    def capped_at(self, now: datetime) -> bool:
        """Whether the cap refusal still applies: a cap never outlives its billing cycle."""
        return self.usage_capped and (self.capped_until is None or now < self.capped_until)


@dataclass(frozen=True, slots=True)
class KeptDays:
    """One X project's complete UTC days, kept across answers (each sends 90 at most) for the
    year-ago forecast: up to KEEP_DAYS before the day of the last answer. Compact: one 8-byte
    count per day from `first` on (-1: unknown), about 3.6 kB for a full history."""

    project_id: str
    first: date | None  # None: no day kept
    posts: array[int]

    @classmethod
    def of(cls, project_id: str, days: Mapping[date, int]) -> KeptDays:
        if not days:
            return cls(project_id, None, array("q"))
        first = min(days)
        posts = array("q", [-1]) * ((max(days) - first).days + 1)
        for day, count in days.items():
            posts[(day - first).days] = count
        return cls(project_id, first, posts)

    @property
    def days(self) -> dict[date, int]:
        """The known days, oldest first."""
        if self.first is None:
            return {}
        first = self.first
        return {first + k * _DAY: n for k, n in enumerate(self.posts) if n >= 0}


def keep_days(previous: KeptDays | None, report: UsageReport, now: datetime) -> KeptDays:
    """The days kept after an answer (pure): the answer's complete days, revisions included,
    over the days kept before, if they are the same X project's; the same object when nothing
    changed, so that a writer can tell."""
    today = now.date()
    first = today - KEEP_DAYS * _DAY
    project_id = report.project_id or UNKNOWN_PROJECT_ID
    same = previous is not None and previous.project_id == project_id
    days = previous.days if previous is not None and same else {}
    days.update((d, n) for d, n in report.daily.items() if today - HISTORY_WINDOW <= d < today)
    kept = KeptDays.of(project_id, {d: n for d, n in days.items() if d >= first and n >= 0})
    if previous is not None and same and kept == previous:
        return previous
    return kept


@dataclass(frozen=True, slots=True)
class ProjectState:
    project: ProjectConfig
    usage: UsageSnapshot | None = None
    credits: CreditsSnapshot | None = None
    status: PollStatus = PollStatus()
    requests: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (endpoint, code)
    errors: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (endpoint, reason)
    # When this process began polling the project; a reload that keeps the project keeps it.
    configured_at: datetime | None = None
    kept: KeptDays | None = None  # from the answers so far, or the history file at start


def build_usage(
    report: UsageReport,
    *,
    now: datetime,
    means: CapResetDayMeans,
    post_read_usd: float,
    kept: KeptDays | None = None,
) -> UsageSnapshot:
    """Combine one parsed answer with the cycle math and the forecast (pure). `kept`: the days
    kept from this and earlier answers (keep_days), which the forecast reads beside the answer's."""
    cycle = billing.cycle_of(now, report.cap_reset_day, means)
    today = now.date()
    daily = {day: n for day, n in report.daily.items() if today - HISTORY_WINDOW <= day <= today}
    consumed = report.project_usage
    if consumed is None:
        consumed = billing.sum_in_cycle(daily, cycle, today)
    apps = tuple(
        AppUsage(app_id, billing.sum_in_cycle(days, cycle, today), days.get(today, 0))
        for app_id, days in sorted(report.apps.items())
    )
    history = daily
    if kept is not None and kept.project_id == (report.project_id or UNKNOWN_PROJECT_ID):
        history = kept.days | daily
    forecast = forecast_cycle(
        daily=history,
        consumed=consumed,
        now=now,
        cycle_start=cycle.start,
        cycle_end=cycle.end,
        cap=report.cap,
    )
    return UsageSnapshot(
        project_id=report.project_id or UNKNOWN_PROJECT_ID,
        taken_at=now,
        cycle=cycle,
        cap=report.cap,
        cap_reset_day=report.cap_reset_day,
        consumed=consumed,
        # The API lists days up to the last one with usage, so a list without today means none
        # today; an answer without any day says nothing of today unless the cycle has no usage.
        consumed_today=daily.get(today, 0) if daily or consumed == 0 else None,
        daily_baseline=daily_baseline(daily, today),
        forecast=forecast,
        post_read_usd=post_read_usd,
        apps=apps,
        daily=MappingProxyType(daily),
        missing=report.missing,
        invalid=report.invalid,
        api_errors=report.api_errors,
    )


@dataclass(frozen=True, slots=True)
class ConfigStatus:
    poll_interval: float
    last_reload_ok: bool
    last_reload_success: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class HistoryStatus:
    """How --history.file went: read at start, and the last write."""

    loaded_ok: bool
    write_ok: bool | None  # None before the first write
    last_write: float | None  # epoch seconds of the last write that worked


class Store:
    """Holds the current ProjectStates; each update swaps in a whole new immutable mapping."""

    def __init__(self, config_status: ConfigStatus) -> None:
        self._lock = threading.Lock()
        self._states: Mapping[str, ProjectState] = MappingProxyType({})
        self._config_status = config_status
        self._history_status: HistoryStatus | None = None
        self._generation = 0
        # Project name -> by when its next poll should have ended, and the mark of its poll in
        # flight (None between polls); copied on write, so that readers need no lock.
        self._deadlines: Mapping[str, tuple[datetime, object | None]] = MappingProxyType({})

    @property
    def states(self) -> Mapping[str, ProjectState]:
        return self._states

    @property
    def config_status(self) -> ConfigStatus:
        return self._config_status

    @property
    def generation(self) -> int:
        """Grows at every change, so that a reader can cache what it derived from the store."""
        return self._generation

    def put(self, state: ProjectState) -> None:
        with self._lock:
            states = dict(self._states)
            states[state.project.name] = state
            self._states = MappingProxyType(states)
            self._generation += 1

    def poll_due(self, name: str, deadline: datetime) -> None:
        """A project's first poll should have ended by `deadline` (set when it is configured)."""
        with self._lock:
            if name not in self._deadlines:
                self._deadlines = MappingProxyType({**self._deadlines, name: (deadline, None)})

    def poll_started(self, name: str, deadline: datetime) -> object:
        """Note a poll in flight; returns the mark poll_ended() takes, so that the end of a poll
        a reload replaced does not move its successor's deadline."""
        mark = object()
        with self._lock:
            self._deadlines = MappingProxyType({**self._deadlines, name: (deadline, mark)})
        return mark

    def poll_ended(self, name: str, mark: object, next_deadline: datetime) -> None:
        """The poll ended; the next one should have ended by `next_deadline` (one interval and
        one poll's budget on)."""
        with self._lock:
            if name in self._deadlines and self._deadlines[name][1] is mark:
                deadlines = {**self._deadlines, name: (next_deadline, None)}
                self._deadlines = MappingProxyType(deadlines)

    def overdue(self, now: datetime) -> frozenset[str]:
        """The projects whose poll has not ended by its deadline: one still running (hung in a
        name lookup, a handshake, anything the request timeout does not reach) or one that never
        started (every worker taken by hung polls, a stopped scheduler). Failed, as far as
        anyone waiting for it can tell."""
        return frozenset(name for name, (deadline, _) in self._deadlines.items() if now >= deadline)

    def retain(self, names: set[str]) -> None:
        """Forget the projects that are no longer configured."""
        with self._lock:
            self._states = MappingProxyType(
                {name: state for name, state in self._states.items() if name in names}
            )
            self._deadlines = MappingProxyType(
                {name: due for name, due in self._deadlines.items() if name in names}
            )
            self._generation += 1

    def set_config_status(self, status: ConfigStatus) -> None:
        with self._lock:
            self._config_status = status
            self._generation += 1

    @property
    def history_status(self) -> HistoryStatus | None:
        """None without --history.file."""
        return self._history_status

    def set_history_status(self, status: HistoryStatus) -> None:
        with self._lock:
            if status != self._history_status:
                self._history_status = status
                self._generation += 1
