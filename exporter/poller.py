"""Scheduled polling: one APScheduler job per project, each poll ending in a new immutable state."""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from exporter import billing, logs
from exporter.billing import FALLBACK_CAP_RESET_DAY
from exporter.client import (
    Attempt,
    CreditsUnavailable,
    Endpoint,
    RateLimit,
    RetryPolicy,
    XApiClient,
    fetch_credits,
    fetch_usage,
    read_token,
    safe_text,
)
from exporter.config import CapResetDayMeans, Config, CreditsMode, ProjectConfig
from exporter.errors import Reason, TokenError, UpstreamError, describe
from exporter.snapshot import (
    ConfigStatus,
    CreditsSnapshot,
    KeptDays,
    PollStatus,
    ProjectState,
    Store,
    UsageSnapshot,
    build_usage,
    keep_days,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
TOKEN_REASON = "token"  # noqa: S105 - a reason label, not a token
# /2/usage/credits allows 30 requests per 15 minutes: never ask more often than every 30 s.
CREDITS_MIN_INTERVAL = timedelta(seconds=30)
# How long stop() waits for the polls it cut short to end.
STOP_GRACE = 3.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class RateLimits:
    """Per project name, the epoch second before which no request goes out after a rate-limit
    429. Shared by a project's successive pollers: a 429 that lands on a poller that a reload
    replaced still holds back its successor's next request."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def until(self, name: str) -> float:
        with self._lock:
            return self._until.get(name, 0.0)

    def extend(self, name: str, at: float) -> None:
        with self._lock:
            self._until[name] = max(self._until.get(name, 0.0), at)


class Slot:
    """Where the pollers write: the store, for the projects configured now. A poll that was still
    running when a reload removed its project must not bring it back; one whose project a reload
    changed writes under the new settings."""

    def __init__(
        self,
        store: Store,
        lock: threading.Lock,
        configured: Callable[[str], ProjectConfig | None],
    ) -> None:
        self._store = store
        self._lock = lock  # the Poller's: reloads change the configured projects under it
        self._configured = configured

    @property
    def states(self) -> Mapping[str, ProjectState]:
        return self._store.states

    def put(self, state: ProjectState) -> None:
        with self._lock:
            project = self._configured(state.project.name)
            if project is not None:
                self._store.put(replace(state, project=project))

    def poll_started(self, name: str, deadline: datetime) -> object:
        return self._store.poll_started(name, deadline)

    def poll_ended(self, name: str, mark: object, next_deadline: datetime) -> None:
        self._store.poll_ended(name, mark, next_deadline)


@dataclass(frozen=True, slots=True)
class _Blocked:
    """The X API's refusals that outlast one poll: the cap 429 and the 402 CreditsDepleted."""

    capped: bool
    capped_until: datetime | None
    credits_depleted: bool


class ProjectPoller:
    """Polls one project. Only its own job calls poll(), so its fields need no lock."""

    def __init__(
        self,
        project: ProjectConfig,
        config: Config,
        client: XApiClient,
        store: Slot,
        clock: Clock = utc_now,
        limits: RateLimits | None = None,
    ) -> None:
        self.project = project
        self.config = config
        self._client = client
        self._store = store
        self._clock = clock
        self._limits = limits or RateLimits()
        self._credits_off = config.credits is CreditsMode.OFF
        self._credits_polled_at: datetime | None = None
        self._credits_blocked_until = 0.0
        self.retired = False  # a reload replaced or removed it: its job must not run again

    @property
    def blocked_until(self) -> float:
        """Epoch seconds before which no request goes out, after a rate-limit 429."""
        return self._limits.until(self.project.name)

    @blocked_until.setter
    def blocked_until(self, at: float) -> None:
        self._limits.extend(self.project.name, at)

    @property
    def client(self) -> XApiClient:
        return self._client

    @property
    def budget(self) -> float:
        """Seconds one poll may take, retries included."""
        return max(self.config.poll_interval * 0.9, self.config.request_timeout)

    def poll(self) -> None:
        """One poll; never raises (the job must survive anything the upstream does)."""
        now = self._clock()
        # Until it ends, the store knows by when it should have: past that, the collector
        # shows it failed, even if the thread hangs where no timeout reaches.
        mark = self._store.poll_started(self.project.name, now + timedelta(seconds=self.budget))
        try:
            self._poll(now)
        finally:
            self._store.poll_ended(self.project.name, mark, self.next_deadline(self._clock()))

    def next_deadline(self, now: datetime) -> datetime:
        """By when the poll after one ending (or a first one scheduled) at `now` should have
        ended: the scheduler starts it within one interval, and it has its budget."""
        return now + timedelta(seconds=self.config.poll_interval + self.budget)

    def _poll(self, now: datetime) -> None:
        started = time.monotonic()
        previous = self._store.states.get(self.project.name) or ProjectState(self.project)
        attempts: list[Attempt] = []
        usage: UsageSnapshot | None = previous.usage
        credits = previous.credits
        kept = previous.kept
        reason: str | None = None
        message: str | None = None
        capped = previous.status.capped_at(now)
        blocked = _Blocked(
            capped,
            previous.status.capped_until if capped else None,
            previous.status.credits_depleted,
        )
        try:
            usage, credits, kept = self._poll_once(now, attempts, credits, kept)
            blocked = _Blocked(False, None, False)
        except UpstreamError as exc:
            reason, message = exc.reason.value, str(exc)
            if exc.reason is Reason.RATE_LIMITED and exc.retry_at is not None:
                self.blocked_until = max(self.blocked_until, exc.retry_at)
            if exc.reason is Reason.USAGE_CAPPED:
                # Capped until the cycle ends: the cycle of `now` that the last answer's reset day
                # gives, as a day of the month (a count of days left is read at the answer's
                # time: counted from `now` it would outlive the cycle); else the month's end.
                reset_day = FALLBACK_CAP_RESET_DAY
                if usage is not None:
                    means = self.config.cap_reset_day_means
                    reset_day = billing.reset_day_of_month(
                        usage.cap_reset_day, means, usage.taken_at
                    )
                end = billing.cycle_for(now, reset_day, CapResetDayMeans.DAY_OF_MONTH).end
                blocked = replace(blocked, capped=True, capped_until=end)
            if exc.reason is Reason.CREDITS_DEPLETED:
                blocked = replace(blocked, credits_depleted=True)
        except TokenError as exc:
            reason, message = TOKEN_REASON, str(exc)
        except Exception as exc:  # the job's edge: log it, show it, keep polling
            log.exception("poll crashed", extra=logs.fields(project=self.project.name))
            reason, message = Reason.PARSE.value, safe_text(f"internal error: {describe(exc)}")

        duration = time.monotonic() - started
        status = self._status(previous.status, attempts, now, duration, reason, message, blocked)
        self._store.put(
            replace(
                previous,
                project=self.project,
                usage=usage,
                credits=credits,
                kept=kept,
                status=status,
                requests=_count(previous.requests, [(a.endpoint.value, a.code) for a in attempts]),
                errors=_count(
                    previous.errors,
                    [(a.endpoint.value, a.reason.value) for a in attempts if a.reason is not None],
                ),
            )
        )
        if reason is None:
            log.debug(
                "poll ok",
                extra=logs.fields(project=self.project.name, duration=logs.seconds(duration)),
            )
            self._log_oddities(usage, previous.usage)
        elif reason != previous.status.error_reason:
            log.warning(
                "poll failed",
                extra=logs.fields(
                    project=self.project.name,
                    reason=reason,
                    retry_in=logs.seconds(self.blocked_until - time.time())
                    if reason == Reason.RATE_LIMITED and self.blocked_until > time.time()
                    else None,
                    err=message,
                ),
            )

    def _log_oddities(self, usage: UsageSnapshot | None, previous: UsageSnapshot | None) -> None:
        """Say once, when it changes, what the answer carried beside its figures."""
        if usage is None:
            return
        before = (previous.api_errors, previous.invalid) if previous else ((), ())
        if (usage.api_errors, usage.invalid) != before and (usage.api_errors or usage.invalid):
            log.warning(
                "answer not as documented",
                extra=logs.fields(
                    project=self.project.name,
                    errors=",".join(usage.api_errors),
                    invalid_fields=",".join(usage.invalid),
                ),
            )

    def _poll_once(
        self,
        now: datetime,
        attempts: list[Attempt],
        credits: CreditsSnapshot | None,
        kept: KeptDays | None,
    ) -> tuple[UsageSnapshot, CreditsSnapshot | None, KeptDays]:
        if time.time() < self.blocked_until:
            reset = datetime.fromtimestamp(self.blocked_until, UTC).isoformat()
            raise UpstreamError(Reason.RATE_LIMITED, f"rate limited: no request before {reset}")
        token = read_token(self.project.token)
        deadline = time.monotonic() + self.budget
        report = fetch_usage(
            self._client, token, self.config.history_days, deadline=deadline, attempts=attempts
        )
        if report.missing:
            log.debug(
                "fields missing",
                extra=logs.fields(project=self.project.name, fields=",".join(report.missing)),
            )
        kept = keep_days(kept, report, now)
        usage = build_usage(
            report,
            now=now,
            means=self.config.cap_reset_day_means,
            post_read_usd=self.config.pricing.post_read_usd,
            kept=kept,
        )
        return usage, self._poll_credits(token, usage, now, deadline, attempts, credits), kept

    def _poll_credits(
        self,
        token: str,
        usage: UsageSnapshot,
        now: datetime,
        deadline: float,
        attempts: list[Attempt],
        previous: CreditsSnapshot | None,
    ) -> CreditsSnapshot | None:
        """Best effort: a failure keeps the last balance and never fails the poll."""
        if self._credits_off:
            return CreditsSnapshot(available=False)
        # On the poll's clock; a clock set back asks at once rather than wait for it.
        polled = self._credits_polled_at
        if polled is not None and timedelta(0) <= now - polled < CREDITS_MIN_INTERVAL:
            return previous
        if time.time() < self._credits_blocked_until:  # its own rate limit said so
            return previous
        self._credits_polled_at = now
        try:
            balance = fetch_credits(self._client, token, deadline=deadline, attempts=attempts)
        except CreditsUnavailable:
            if self.config.credits is CreditsMode.AUTO:
                log.info("credits not available", extra=logs.fields(project=self.project.name))
                self._credits_off = True
            return CreditsSnapshot(available=False)
        except UpstreamError as exc:
            if exc.reason is Reason.RATE_LIMITED and exc.retry_at is not None:
                self._credits_blocked_until = exc.retry_at
            log.warning(
                "credits failed",
                extra=logs.fields(project=self.project.name, reason=exc.reason.value, err=str(exc)),
            )
            return previous
        depletion = billing.credits_depletion(
            balance.balance, usage.daily, now, usage.post_read_usd
        )
        return CreditsSnapshot(available=True, balance=balance, depletion=depletion, read_at=now)

    def _status(
        self,
        previous: PollStatus,
        attempts: list[Attempt],
        now: datetime,
        duration: float,
        reason: str | None,
        message: str | None,
        blocked: _Blocked,
    ) -> PollStatus:
        # The last usage answer's headers; an answer without them (a 401) makes them unknown. A
        # poll that got no answer (no request sent, or no response) leaves the previous ones.
        answers = [a for a in attempts if a.endpoint is Endpoint.USAGE and a.code != "error"]
        last = (answers[-1].rate_limit or RateLimit(None, None, None)) if answers else None
        return PollStatus(
            success=reason is None,
            error_reason=reason,
            error_message=message,
            last_attempt=now,
            last_success=now if reason is None else previous.last_success,
            duration=duration,
            rate_limit_remaining=last.remaining if last else previous.rate_limit_remaining,
            rate_limit_reset=last.reset if last else previous.rate_limit_reset,
            usage_capped=blocked.capped,
            capped_until=blocked.capped_until,
            credits_depleted=blocked.credits_depleted,
        )


def _same_polling(old: Config, new: Config) -> bool:
    """Whether a project's poller can stay: every global setting equal (the list may differ)."""
    return replace(old, projects=(), source="") == replace(new, projects=(), source="")


def _count(
    previous: Mapping[tuple[str, str], int], keys: list[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    counts = dict(previous)
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return counts


class Poller:
    """Owns the scheduler and one ProjectPoller per configured project; applies reloads."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        clock: Clock = utc_now,
        retry: RetryPolicy | None = None,
        kept: Callable[[str], KeptDays | None] | None = None,
    ) -> None:
        """`kept`: the days kept for a project by name (--history.file), asked when the project
        is configured, at start or by a reload."""
        self._store = store
        self._kept_for = kept or (lambda _name: None)
        self._clock = clock
        self._retry = retry
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        # Held while a poller writes its state and while a reload retires pollers.
        self._commit = threading.Lock()
        self._limits = RateLimits()
        self._slot = Slot(store, self._commit, self._configured)
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=32)}, timezone=UTC
        )
        self._pollers: dict[str, ProjectPoller] = {}
        self._client: XApiClient | None = None
        # Every client not yet closed, the replaced ones included: stop() cuts them all.
        self._clients: weakref.WeakSet[XApiClient] = weakref.WeakSet()
        self._running = 0
        self._idle = threading.Condition()
        self._changed: set[str] = set()
        self.config = config
        self._apply(config)

    def _make_client(self, config: Config) -> XApiClient:
        client = XApiClient(
            config.api_base_url,
            timeout=config.request_timeout,
            retry=self._retry,
            wait=self._stopping.wait,
        )
        self._clients.add(client)
        return client

    def _apply(self, config: Config) -> None:
        old_client = self._client
        old = self.config
        reuse_client = old_client is not None and (
            old.api_base_url,
            old.request_timeout,
        ) == (config.api_base_url, config.request_timeout)
        client = old_client if reuse_client and old_client else self._make_client(config)
        pollers: dict[str, ProjectPoller] = {}
        changed: set[str] = set()
        for project in config.projects:
            current = self._pollers.get(project.name)
            if (
                current is not None
                and _same_polling(current.config, config)
                and current.project == project
            ):
                pollers[project.name] = current
                continue
            # A rate-limit wait survives a reload (self._limits): the token is still the same App's.
            pollers[project.name] = ProjectPoller(
                project,
                config,
                client,
                self._slot,
                self._clock,
                self._limits,
            )
            changed.add(project.name)
        with self._commit:
            for name, poller in self._pollers.items():
                poller.retired = pollers.get(name) is not poller
            self._store.retain(set(pollers))
            self._pollers = pollers
            now = self._clock()
            for name, poller in pollers.items():
                if name not in self._store.states:
                    kept = self._kept_for(name)
                    self._store.put(ProjectState(poller.project, configured_at=now, kept=kept))
                self._store.poll_due(name, poller.next_deadline(now))
        self._changed = changed
        self._client = client
        self.config = config
        self._store.set_config_status(
            ConfigStatus(
                poll_interval=config.poll_interval,
                last_reload_ok=True,
                last_reload_success=time.time(),
            )
        )
        if old_client is not None and old_client is not client:
            old_client.close()  # once the polls still using it have ended

    def _configured(self, name: str) -> ProjectConfig | None:
        poller = self._pollers.get(name)
        return None if poller is None else poller.project

    def _run(self, poller: ProjectPoller) -> None:
        """One poll of one project, holding its client open until it ends."""
        if poller.retired or self._stopping.is_set():
            return
        with self._idle:
            self._running += 1
        try:
            with poller.client.lease():
                poller.poll()
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def start(self) -> None:
        self._scheduler.start()
        self._schedule()

    def _schedule(self) -> None:
        """Add or replace the jobs of new or changed projects (first run now); drop removed ones."""
        existing = {job.id for job in self._scheduler.get_jobs()}
        for name in existing - set(self._pollers):
            self._scheduler.remove_job(name)
        for name, poller in self._pollers.items():
            if name in existing and name not in self._changed:
                continue
            self._scheduler.add_job(
                functools.partial(self._run, poller),
                trigger="interval",
                seconds=self.config.poll_interval,
                id=name,
                name=f"poll {name}",
                next_run_time=datetime.now(UTC),
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                replace_existing=True,
            )

    def reload(self, config: Config) -> None:
        with self._lock:
            self._apply(config)
            if self._scheduler.running:
                self._schedule()

    def reload_failed(self) -> None:
        status = self._store.config_status
        self._store.set_config_status(replace(status, last_reload_ok=False))

    @property
    def ready(self) -> bool:
        """Every configured project's first poll has ended, well or badly."""
        states = self._store.states
        return all(
            name in states and states[name].status.success is not None for name in self._pollers
        )

    def poll_all_now(self) -> None:
        """Run every project's poll once, in this thread (for one-shot commands and tests)."""
        for poller in list(self._pollers.values()):
            self._run(poller)

    def stop(self) -> None:
        """Stop polling within STOP_GRACE whatever the upstream does: requests in flight are cut
        (their polls end as network errors), no new one starts."""
        self._stopping.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        for client in list(self._clients):
            client.abort()
        with self._idle:
            self._idle.wait_for(lambda: self._running == 0, timeout=STOP_GRACE)
