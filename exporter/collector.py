"""Prometheus collector: renders the store's immutable snapshots into metric families, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__, billing
from exporter.client import Endpoint
from exporter.errors import Reason
from exporter.poller import TOKEN_REASON, utc_now
from exporter.snapshot import UNKNOWN_PROJECT_ID, ProjectState, Store

PROJECT = ["project", "project_id"]
APP = ["project", "project_id", "app_id"]
CACHED = "Cached: refreshed every poll_interval, never fetched at scrape time."
# The exporter's own facts (version, configuration) are current at every scrape: no CACHED note.
CURRENT = "Current at scrape time."
POLL_REASONS = [reason.value for reason in Reason] + [TOKEN_REASON]


class _Families:
    """Declares every family once, so that each has its HELP and TYPE even with no sample."""

    def __init__(self) -> None:
        self.items: list[Metric] = []

    def gauge(
        self, name: str, doc: str, labels: list[str], note: str = CACHED
    ) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, f"{doc} {note}", labels=labels)
        self.items.append(family)
        return family

    def counter(self, name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
        family = CounterMetricFamily(name, f"{doc} {CACHED}", labels=labels)
        self.items.append(family)
        return family


class UsageCollector(Collector):
    """Reads the store at collect time; holds no metric state of its own."""

    def __init__(self, store: Store, clock: Callable[[], datetime] = utc_now) -> None:
        self._store = store
        self._clock = clock

    def describe(self) -> Iterator[Metric]:
        # Nothing to describe up front: registering must not run collect().
        return iter(())

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        f = _Families()
        info = f.gauge("xapi_project_info", "Project known to the exporter, always 1.", PROJECT)
        cap = f.gauge("xapi_project_cap_posts", "Monthly Post cap (project_cap).", PROJECT)
        reset_day = f.gauge(
            "xapi_project_cap_reset_day", "cap_reset_day as the X API sent it.", PROJECT
        )
        cycle_start = f.gauge(
            "xapi_project_cycle_start_timestamp_seconds", "Start of the billing cycle.", PROJECT
        )
        cycle_end = f.gauge(
            "xapi_project_cycle_end_timestamp_seconds",
            "End of the billing cycle, when the cap resets.",
            PROJECT,
        )
        consumed = f.gauge(
            "xapi_project_posts_consumed", "Posts consumed this billing cycle.", PROJECT
        )
        today = f.gauge(
            "xapi_project_posts_consumed_today", "Posts consumed this UTC day so far.", PROJECT
        )
        baseline = f.gauge(
            "xapi_project_posts_consumed_daily_baseline",
            "Median Posts per day over the last 7 complete UTC days.",
            PROJECT,
        )
        utilization = f.gauge(
            "xapi_project_cap_utilization_ratio", "Posts consumed / monthly cap.", PROJECT
        )
        projected = f.gauge(
            "xapi_project_posts_projected", "Forecast Posts consumed at cycle end.", PROJECT
        )
        lower = f.gauge(
            "xapi_project_posts_projected_lower",
            "Lower bound of the 80% band of the cycle-end forecast.",
            PROJECT,
        )
        upper = f.gauge(
            "xapi_project_posts_projected_upper",
            "Upper bound of the 80% band of the cycle-end forecast.",
            PROJECT,
        )
        exhaustion = f.gauge(
            "xapi_project_cap_exhaustion_timestamp_seconds",
            "When the forecast reaches the cap; absent if not within this cycle.",
            PROJECT,
        )
        spend = f.gauge(
            "xapi_project_spend_usd", "Estimated Post-read spend this billing cycle.", PROJECT
        )
        spend_projected = f.gauge(
            "xapi_project_spend_projected_usd",
            "Forecast Post-read spend at cycle end.",
            PROJECT,
        )
        budget = f.gauge("xapi_project_budget_usd", "Configured monthly budget.", PROJECT)
        limit = f.gauge(
            "xapi_project_spending_limit_usd", "Configured spending limit per cycle.", PROJECT
        )
        capped = f.gauge(
            "xapi_project_usage_capped",
            "1 while the X API answers UsageCapExceeded for this project, in this billing cycle.",
            PROJECT,
        )
        depleted = f.gauge(
            "xapi_project_credits_depleted",
            "1 while the X API answers 402 CreditsDepleted: every billed request fails.",
            PROJECT,
        )
        price = f.gauge(
            "xapi_project_pricing_post_read_usd",
            "Price per Post read used by the spend figures.",
            PROJECT,
        )
        reward = f.gauge(
            "xapi_project_xai_reward_ratio",
            "xAI credit reward rate reached by this cycle's estimated spend.",
            PROJECT,
        )
        next_tier = f.gauge(
            "xapi_project_xai_reward_next_tier_spend_usd",
            "Estimated spend still needed for the next xAI reward tier.",
            PROJECT,
        )
        newest = f.gauge(
            "xapi_project_data_newest_day_timestamp_seconds",
            "Start of the newest UTC day in the daily data.",
            PROJECT,
        )
        app_consumed = f.gauge(
            "xapi_app_posts_consumed", "Posts consumed this billing cycle by the App.", APP
        )
        app_today = f.gauge(
            "xapi_app_posts_consumed_today", "Posts consumed this UTC day by the App.", APP
        )
        missing = f.gauge(
            "xapi_exporter_response_missing_field",
            "1 for each documented field the last usage answer lacked.",
            ["project", "field"],
        )
        invalid = f.gauge(
            "xapi_exporter_response_invalid_field",
            "1 for each field the last usage answer carried but not as documented.",
            ["project", "field"],
        )
        error_entries = f.gauge(
            "xapi_exporter_response_error_entries",
            "Entries of the errors list the last usage answer carried beside its data.",
            ["project"],
        )
        credits_available = f.gauge(
            "xapi_credits_available", "1 when /2/usage/credits answers.", ["project"]
        )
        credit_families = {
            "total": f.gauge("xapi_credits_total_balance_usd", "Credit balance.", ["project"]),
            "prepaid": f.gauge(
                "xapi_credits_prepaid_balance_usd", "Prepaid credit balance.", ["project"]
            ),
            "free": f.gauge("xapi_credits_free_balance_usd", "Free credit balance.", ["project"]),
        }
        depletion = f.gauge(
            "xapi_credits_depletion_timestamp_seconds",
            "When the credit balance runs out at the mean Post-read spend of the last 7 days held.",
            ["project"],
        )
        credits_read = f.gauge(
            "xapi_exporter_credits_last_success_timestamp_seconds",
            "When the credit balance exported was read; older than the last poll once "
            "/2/usage/credits fails.",
            ["project"],
        )
        configured = f.gauge(
            "xapi_exporter_project_configured_timestamp_seconds",
            "When this process began polling the project; reloads that keep it keep the time.",
            ["project"],
            CURRENT,
        )
        success = f.gauge(
            "xapi_exporter_poll_success", "1 if the last poll succeeded.", ["project"]
        )
        poll_error = f.gauge(
            "xapi_exporter_poll_error",
            "1 for the reason the last poll failed, 0 for the others.",
            ["project", "reason"],
        )
        last_success = f.gauge(
            "xapi_exporter_last_success_timestamp_seconds",
            "End of the last successful poll.",
            ["project"],
        )
        duration = f.gauge(
            "xapi_exporter_poll_duration_seconds",
            "Duration of the last poll, retries included.",
            ["project"],
        )
        requests = f.counter(
            "xapi_exporter_upstream_requests",
            "Requests sent to the X API by endpoint and HTTP status.",
            ["project", "endpoint", "code"],
        )
        errors = f.counter(
            "xapi_exporter_upstream_errors",
            "Failed X API requests by reason.",
            ["project", "endpoint", "reason"],
        )
        remaining = f.gauge(
            "xapi_exporter_rate_limit_remaining",
            "x-rate-limit-remaining of the last usage answer.",
            ["project"],
        )
        rate_reset = f.gauge(
            "xapi_exporter_rate_limit_reset_timestamp_seconds",
            "x-rate-limit-reset of the last usage answer.",
            ["project"],
        )

        kept_since = f.gauge(
            "xapi_exporter_history_oldest_day_timestamp_seconds",
            "Start (00:00 UTC) of the oldest day of usage kept for the forecast: the year-ago "
            "forecast needs about 400 days; the API sends 90, --history.file keeps them across "
            "restarts.",
            ["project"],
        )

        overdue = self._store.overdue(now)
        for name, state in sorted(self._store.states.items()):
            if state.configured_at is not None:
                configured.add_metric([name], state.configured_at.timestamp())
            if state.kept is not None and state.kept.first is not None:
                oldest = datetime.combine(state.kept.first, time(), UTC)
                kept_since.add_metric([name], oldest.timestamp())
            self._exporter_series(
                name,
                state,
                name in overdue,
                (success, poll_error, last_success, duration),
                requests,
                errors,
            )
            if state.status.rate_limit_remaining is not None:
                remaining.add_metric([name], state.status.rate_limit_remaining)
            if state.status.rate_limit_reset is not None:
                rate_reset.add_metric([name], state.status.rate_limit_reset)
            if state.credits is not None:
                credits_available.add_metric([name], 1 if state.credits.available else 0)
                balance = state.credits.balance
                if state.credits.available and balance is not None:
                    for key, amount in (
                        ("total", balance.total_balance),
                        ("prepaid", balance.prepaid_balance),
                        ("free", balance.free_balance),
                    ):
                        if amount is not None:
                            credit_families[key].add_metric([name], amount)
                    if state.credits.depletion is not None:
                        depletion.add_metric([name], state.credits.depletion.timestamp())
                    if state.credits.read_at is not None:
                        credits_read.add_metric([name], state.credits.read_at.timestamp())
            usage = state.usage
            project_id = usage.project_id if usage is not None else UNKNOWN_PROJECT_ID
            labels = [name, project_id]
            # The blocked states page from the first poll, with or without a good answer before.
            if state.status.success is not None:
                depleted.add_metric(labels, 1 if state.status.credits_depleted else 0)
            cycle_current = usage is not None and now < usage.cycle.end
            if state.status.capped_at(now):
                capped.add_metric(labels, 1)
            elif cycle_current:
                capped.add_metric(labels, 0)
            if usage is None:
                continue
            info.add_metric(labels, 1)
            for field in usage.missing:
                missing.add_metric([name, field], 1)
            for field in usage.invalid:
                invalid.add_metric([name, field], 1)
            error_entries.add_metric([name], len(usage.api_errors))
            price.add_metric(labels, usage.post_read_usd)
            if usage.cap is not None:
                cap.add_metric(labels, usage.cap)
            if usage.cap_reset_day is not None:
                reset_day.add_metric(labels, usage.cap_reset_day)
            if state.project.budget_usd is not None:
                budget.add_metric(labels, state.project.budget_usd)
            if state.project.spending_limit_usd is not None:
                limit.add_metric(labels, state.project.spending_limit_usd)
            if usage.newest_day_timestamp is not None:
                newest.add_metric(labels, usage.newest_day_timestamp)
            if usage.daily_baseline is not None:
                baseline.add_metric(labels, usage.daily_baseline)
            if now.date() == usage.today and usage.consumed_today is not None:
                today.add_metric(labels, usage.consumed_today)
                for app in usage.apps:
                    app_today.add_metric([*labels, app.app_id], app.today)
            if not cycle_current:
                # The cycle this answer describes is over: its totals are not the new cycle's.
                continue
            cycle_start.add_metric(labels, usage.cycle.start.timestamp())
            cycle_end.add_metric(labels, usage.cycle.end.timestamp())
            consumed.add_metric(labels, usage.consumed)
            if usage.utilization is not None:
                utilization.add_metric(labels, usage.utilization)
            projected.add_metric(labels, usage.forecast.projected)
            lower.add_metric(labels, usage.forecast.lower)
            upper.add_metric(labels, usage.forecast.upper)
            if usage.forecast.exhaustion is not None:
                exhaustion.add_metric(labels, usage.forecast.exhaustion.timestamp())
            spend.add_metric(labels, usage.spend)
            spend_projected.add_metric(labels, usage.projected_spend)
            reward.add_metric(labels, billing.reward_ratio(usage.spend))
            needed = billing.spend_to_next_tier(usage.spend)
            if needed is not None:
                next_tier.add_metric(labels, needed)
            for app in usage.apps:
                app_consumed.add_metric([*labels, app.app_id], app.consumed)

        config_status = self._store.config_status
        f.gauge(
            "xapi_exporter_poll_interval_seconds", "Configured poll_interval.", [], CURRENT
        ).add_metric([], config_status.poll_interval)
        f.gauge(
            "xapi_exporter_config_last_reload_successful",
            "1 if the last configuration (re)load succeeded.",
            [],
            CURRENT,
        ).add_metric([], 1 if config_status.last_reload_ok else 0)
        f.gauge(
            "xapi_exporter_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.",
            [],
            CURRENT,
        ).add_metric([], config_status.last_reload_success)
        history = self._store.history_status
        if history is not None:
            # Each absent until it means something: no write before the first, no time before
            # the first that worked.
            for name, help_text, value in (
                (
                    "xapi_exporter_history_file_load_success",
                    "1 if --history.file was read at start (or did not exist yet), 0 if it "
                    "could not be used and was moved aside.",
                    float(history.loaded_ok),
                ),
                (
                    "xapi_exporter_history_file_write_success",
                    "1 if the last write of --history.file succeeded.",
                    None if history.write_ok is None else float(history.write_ok),
                ),
                (
                    "xapi_exporter_history_file_last_write_timestamp_seconds",
                    "When --history.file was last written successfully.",
                    history.last_write,
                ),
            ):
                if value is not None:
                    f.gauge(name, help_text, [], CURRENT).add_metric([], value)
        f.gauge(
            "xapi_exporter_build_info", "Exporter version, always 1.", ["version"], CURRENT
        ).add_metric([__version__], 1)
        yield from f.items

    @staticmethod
    def _exporter_series(
        name: str,
        state: ProjectState,
        overdue: bool,
        gauges: tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily],
        requests: CounterMetricFamily,
        errors: CounterMetricFamily,
    ) -> None:
        success, poll_error, last_success, duration = gauges
        status = state.status
        # A poll still running past its deadline has failed, as far as anyone can tell: shown
        # so at once, not when (if ever) it ends.
        failed_reason = Reason.TIMEOUT.value if overdue else status.error_reason
        if status.success is not None or overdue:
            success.add_metric([name], 0 if overdue or not status.success else 1)
            for reason in POLL_REASONS:
                poll_error.add_metric([name, reason], 1 if failed_reason == reason else 0)
        if status.last_success is not None:
            last_success.add_metric([name], status.last_success.timestamp())
        if status.duration is not None:
            duration.add_metric([name], status.duration)
        for (endpoint, code), count in sorted(state.requests.items()):
            requests.add_metric([name, endpoint, code], count)
        # Every reason is present from the start, so that increase() sees the first error.
        for endpoint in Endpoint:
            for reason in Reason:
                count = state.errors.get((endpoint.value, reason.value), 0)
                errors.add_metric([name, endpoint.value, reason.value], count)
