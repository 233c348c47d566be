"""Blocked projects, cycle resets and partial answers, end to end over loopback to the simulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from exporter import landing
from exporter.simulator import Fault, SimProject
from tests.harness import FakeClock, running, sim_project

UNKNOWN = {"project": "p0", "project_id": "unknown"}
KNOWN = {"project": "p0", "project_id": "1001"}

CAPPED_TEXT = "monthly cap reached"
DEPLETED_TEXT = "prepaid credits used up"


def _project(**overrides: object) -> list[SimProject]:
    return [sim_project("1001", "token-blocked-aaaaaaaaaaaaaaaa", **overrides)]


def test_a_project_capped_from_the_first_poll_exports_the_capped_state(tmp_path: Path) -> None:
    with running(_project(), tmp_path) as h:
        h.simulator.set_fault(Fault.USAGE_CAPPED, project_id="1001")
        h.start().poll()
        assert h.value("xapi_exporter_poll_success", project="p0") == 0
        assert h.value("xapi_exporter_poll_error", project="p0", reason="usage_capped") == 1
        assert h.value("xapi_project_usage_capped", **UNKNOWN) == 1
        # No figure is made up for a project whose usage was never read.
        assert h.value("xapi_project_posts_consumed", **UNKNOWN) is None
        assert h.value("xapi_project_info", **UNKNOWN) is None

        h.simulator.clear_faults()
        h.poll()
        assert h.value("xapi_project_usage_capped", **KNOWN) == 0
        assert h.value("xapi_project_usage_capped", **UNKNOWN) is None


def test_credits_depleted_is_its_own_reason_and_a_blocked_state_from_the_first_poll(
    tmp_path: Path,
) -> None:
    with running(_project(), tmp_path) as h:
        h.simulator.set_fault(Fault.CREDITS_DEPLETED, project_id="1001")
        h.start().poll()
        assert h.value("xapi_exporter_poll_error", project="p0", reason="credits_depleted") == 1
        assert h.value("xapi_exporter_poll_error", project="p0", reason="client_error") == 0
        assert (
            h.value(
                "xapi_exporter_upstream_errors_total",
                project="p0",
                endpoint="usage",
                reason="credits_depleted",
            )
            == 1
        )
        assert (
            h.value(
                "xapi_exporter_upstream_requests_total", project="p0", endpoint="usage", code="402"
            )
            == 1
        )
        assert h.value("xapi_project_credits_depleted", **UNKNOWN) == 1

        # Still blocked after a good answer came before: the flag follows the last answer.
        h.simulator.clear_faults()
        h.poll()
        assert h.value("xapi_project_credits_depleted", **KNOWN) == 0
        h.simulator.set_fault(Fault.CREDITS_DEPLETED, project_id="1001")
        h.clock.now += timedelta(minutes=5)
        h.poll()
        assert h.value("xapi_project_credits_depleted", **KNOWN) == 1
        assert h.value("xapi_project_posts_consumed", **KNOWN) is not None  # last good values
        assert DEPLETED_TEXT in landing.render(
            h.store.states, h.clock.now, "/metrics", overdue=frozenset()
        )


def test_the_capped_flag_of_an_ended_cycle_is_not_served_in_the_new_one(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 12, 9, 23, 50, tzinfo=UTC))  # the cycle ends Dec 10
    with running(_project(), tmp_path, clock) as h:
        h.start().poll()
        h.simulator.set_fault(Fault.USAGE_CAPPED, project_id="1001")
        h.poll()
        assert h.value("xapi_project_usage_capped", **KNOWN) == 1
        assert CAPPED_TEXT in landing.render(
            h.store.states, clock.now, "/metrics", overdue=frozenset()
        )

        clock.now = datetime(2026, 12, 10, 0, 5, tzinfo=UTC)  # the cap reset
        assert h.value("xapi_project_usage_capped", **KNOWN) is None
        # The page says what the metrics say, before the next poll too.
        assert CAPPED_TEXT not in landing.render(
            h.store.states, clock.now, "/metrics", overdue=frozenset()
        )
        h.simulator.set_fault(Fault.SERVER_ERROR, project_id="1001")
        h.poll()  # failing polls after the reset do not bring the old flag back
        assert h.value("xapi_project_usage_capped", **KNOWN) is None
        assert h.store.states["p0"].status.usage_capped is False  # nor the landing page
        assert h.value("xapi_project_posts_consumed", **KNOWN) is None

        h.simulator.set_fault(Fault.USAGE_CAPPED, project_id="1001")
        h.poll()  # capped again in the new cycle: that is news, and it pages
        assert h.value("xapi_project_usage_capped", **KNOWN) == 1


def test_a_credits_answer_with_only_some_balances_exports_those(tmp_path: Path) -> None:
    with running(_project(credits={"prepaid_balance": 40.0}), tmp_path) as h:
        h.start().poll()
        assert h.value("xapi_credits_available", project="p0") == 1
        assert h.value("xapi_credits_prepaid_balance_usd", project="p0") == 40.0
        assert h.value("xapi_credits_free_balance_usd", project="p0") is None
        assert h.value("xapi_credits_total_balance_usd", project="p0") is None
        # The runway is the prepaid balance at the recent Post-read spend (~$100 a day here).
        depletion = h.value("xapi_credits_depletion_timestamp_seconds", project="p0")
        assert depletion is not None
        runway_days = (depletion - h.clock.now.timestamp()) / 86400
        assert 0.2 < runway_days < 1.0


def test_days_remaining_without_cap_reset_day_is_the_calendar_month(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 23, 15, 30, tzinfo=UTC))
    with running(_project(shape="overview"), tmp_path, clock) as h:
        h.start(h.config(cap_reset_day_means="days_remaining")).poll()
        start = h.value("xapi_project_cycle_start_timestamp_seconds", **KNOWN)
        end = h.value("xapi_project_cycle_end_timestamp_seconds", **KNOWN)
        assert start == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
        assert end == datetime(2026, 12, 1, tzinfo=UTC).timestamp()


def test_credits_depletion_of_a_two_day_old_project_averages_the_days_it_has(
    tmp_path: Path,
) -> None:
    """$10 a day for two days against $100: ten days, not 35 (missing days are not zero)."""
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    project = sim_project(
        "1001",
        "token-blocked-aaaaaaaaaaaaaaaa",
        apps={"100101": 1.0},
        mean_daily=2_000.0,
        origin=now.date() - timedelta(days=2),
        credits={"prepaid_balance": 100.0, "free_balance": 0.0},
    )
    with running([project], tmp_path, FakeClock(now)) as h:
        h.start(h.config(history_days=3)).poll()
        days = [now.date() - timedelta(days=offset) for offset in (1, 2)]
        spent = sum(project.day_usage("100101", day, now) for day in days) * 0.005 / 2
        depletion = h.value("xapi_credits_depletion_timestamp_seconds", project="p0")
        assert depletion is not None
        assert abs((depletion - now.timestamp()) / 86400 - 100.0 / spent) < 1e-6
        assert 8 < 100.0 / spent < 16  # about $8 a day over a weekend: weeks, not a month


def test_with_one_day_of_history_the_runway_uses_today_s_pace(tmp_path: Path) -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    with running(_project(), tmp_path, FakeClock(now)) as h:
        h.start(h.config(history_days=1)).poll()
        today = h.simulator.project("1001").consumed_today(now)
        per_day = today * 2 * 0.005  # half the day has passed
        depletion = h.value("xapi_credits_depletion_timestamp_seconds", project="p0")
        assert depletion is not None
        assert abs((depletion - now.timestamp()) - 275.0 / per_day * 86400) < 1.0
        assert (
            datetime.fromtimestamp(depletion, UTC) - now
        ).total_seconds() > 0  # never "already depleted" for a positive balance


def test_a_failing_credits_endpoint_keeps_the_last_balance_and_shows_when_it_was_read(
    tmp_path: Path,
) -> None:
    credits_read = "xapi_exporter_credits_last_success_timestamp_seconds"
    with running(_project(), tmp_path) as h:
        h.start().poll()
        read = h.clock.now.timestamp()
        assert h.value(credits_read, project="p0") == read
        asked = h.simulator.request_count("/2/usage/credits")

        # The usage endpoint answers, the credits endpoint does not.
        h.simulator.set_fault(Fault.SERVER_ERROR, project_id="1001", path="/2/usage/credits")
        h.clock.now += timedelta(minutes=5)
        h.poll()
        assert h.value("xapi_exporter_poll_success", project="p0") == 1
        assert h.value("xapi_exporter_last_success_timestamp_seconds", project="p0") == (
            h.clock.now.timestamp()
        )
        assert h.value("xapi_credits_total_balance_usd", project="p0") == 275.0
        assert h.value(credits_read, project="p0") == read
        errors = h.value(
            "xapi_exporter_upstream_errors_total",
            project="p0",
            endpoint="credits",
            reason="server_error",
        )
        assert errors is not None and errors >= 1
        assert h.simulator.request_count("/2/usage/credits") > asked

        h.simulator.clear_faults()
        h.clock.now += timedelta(minutes=5)
        h.poll()
        assert h.value(credits_read, project="p0") == h.clock.now.timestamp()

        # At most one credits request per 30 s of the poll's clock; a clock set back asks at once.
        asked = h.simulator.request_count("/2/usage/credits")
        h.clock.now += timedelta(seconds=20)
        h.poll()
        assert h.simulator.request_count("/2/usage/credits") == asked
        h.clock.now -= timedelta(hours=1)
        h.poll()
        assert h.simulator.request_count("/2/usage/credits") == asked + 1
        assert h.value(credits_read, project="p0") == h.clock.now.timestamp()


def test_under_days_remaining_a_cap_refusal_ends_with_the_cycle_it_was_seen_in(
    tmp_path: Path,
) -> None:
    """The cap 429's end was `now` plus the last answer's count of days left: a flag two days past
    its cycle, served in the next one (review, 2026-11-30)."""
    clock = FakeClock(datetime(2026, 11, 20, 12, tzinfo=UTC))
    project = sim_project("1001", "token-blocked-aaaaaaaaaaaaaaaa", cap_reset_day=3)
    with running([project], tmp_path, clock) as h:
        h.start(h.config(cap_reset_day_means="days_remaining")).poll()
        end = h.value("xapi_project_cycle_end_timestamp_seconds", **KNOWN)
        assert end == datetime(2026, 11, 23, tzinfo=UTC).timestamp()  # 3 days left on the 20th

        clock.now = datetime(2026, 11, 22, 12, tzinfo=UTC)
        h.simulator.set_fault(Fault.USAGE_CAPPED, project_id="1001", count=1)
        h.poll()
        assert h.value("xapi_project_usage_capped", **KNOWN) == 1
        assert h.store.states["p0"].status.capped_until == datetime(2026, 11, 23, tzinfo=UTC)

        clock.now = datetime(2026, 11, 24, 6, tzinfo=UTC)  # the next cycle, its polls failing
        h.simulator.set_fault(Fault.SERVER_ERROR, project_id="1001")
        h.poll()
        assert h.value("xapi_exporter_poll_success", project="p0") == 0
        assert h.value("xapi_project_usage_capped", **KNOWN) is None


def test_an_answer_without_rate_limit_headers_makes_them_unknown(tmp_path: Path) -> None:
    """After a 401 (no x-rate-limit-* headers) the gauges still showed the last 200's headroom
    (review, 2026-11-30); a poll that got no answer at all keeps them."""
    with running(_project(credits=None), tmp_path) as h:
        h.start().poll()
        assert h.value("xapi_exporter_rate_limit_remaining", project="p0") == 49
        assert h.value("xapi_exporter_rate_limit_reset_timestamp_seconds", project="p0")

        h.simulator.set_fault(Fault.UNAUTHORIZED, project_id="1001")
        h.poll()
        assert h.value("xapi_exporter_poll_success", project="p0") == 0
        assert h.value("xapi_exporter_rate_limit_remaining", project="p0") is None
        assert h.value("xapi_exporter_rate_limit_reset_timestamp_seconds", project="p0") is None

        h.simulator.clear_faults()
        h.poll()
        assert h.value("xapi_exporter_rate_limit_remaining", project="p0") == 47

        (tmp_path / "token-0").write_text("")  # no token: no request, so no news of the headers
        h.poll()
        assert h.value("xapi_exporter_poll_error", project="p0", reason="token") == 1
        assert h.value("xapi_exporter_rate_limit_remaining", project="p0") == 47
