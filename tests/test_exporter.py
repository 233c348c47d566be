"""End to end in-process: the exporter polls the simulator over loopback and serves its numbers."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from exporter import landing
from exporter.errors import Reason
from exporter.simulator import Fault, SimProject
from exporter.web import MetricsCache
from tests.conftest import find_token_fragments, register_test_token
from tests.harness import NOW, FakeClock, Harness, running, sim_project

_TOKEN_A = "token-aaaaaaaaaaaaaaaaaaaaaaaa"


def _projects() -> list[SimProject]:
    return [
        sim_project("1001", _TOKEN_A),
        sim_project("2002", "token-bbbbbbbbbbbbbbbbbbbbbbbb", mean_daily=3_000.0, credits=None),
    ]


def _cycle_apps(project: SimProject, now: datetime) -> dict[str, int]:
    """Per-App Posts of the cycle that started on Nov 10 (written out, not computed by billing)."""
    start = datetime(2026, 11, 10, tzinfo=UTC).date()
    days = (now.date() - start).days + 1
    return {app: sum(counts.values()) for app, counts in project.daily(now, days).items()}


def test_every_value_equals_what_the_simulated_api_holds(tmp_path: Path) -> None:
    with running(_projects(), tmp_path) as h:
        h.start(h.config(pricing={"post_read_usd": 0.004})).poll()
        sim = h.simulator.project("1001")
        labels = {"project": "p0", "project_id": "1001"}
        consumed = sim.consumed(NOW)
        assert consumed > 0
        assert h.value("xapi_project_posts_consumed", **labels) == consumed
        assert h.value("xapi_project_posts_consumed_today", **labels) == sim.consumed_today(NOW)
        assert h.value("xapi_project_cap_posts", **labels) == 2_000_000
        assert h.value("xapi_project_cap_reset_day", **labels) == 10
        assert h.value("xapi_project_cap_utilization_ratio", **labels) == pytest.approx(
            consumed / 2_000_000
        )
        assert h.value("xapi_project_spend_usd", **labels) == pytest.approx(consumed * 0.004)
        assert h.value("xapi_project_pricing_post_read_usd", **labels) == 0.004
        start = datetime(2026, 11, 10, tzinfo=UTC).timestamp()
        end = datetime(2026, 12, 10, tzinfo=UTC).timestamp()
        assert h.value("xapi_project_cycle_start_timestamp_seconds", **labels) == start
        assert h.value("xapi_project_cycle_end_timestamp_seconds", **labels) == end
        newest = datetime(2026, 11, 23, tzinfo=UTC).timestamp()
        assert h.value("xapi_project_data_newest_day_timestamp_seconds", **labels) == newest
        apps = _cycle_apps(sim, NOW)
        assert sum(apps.values()) == consumed
        for app_id, posts in apps.items():
            app_labels = {**labels, "app_id": app_id}
            assert h.value("xapi_app_posts_consumed", **app_labels) == posts
            assert h.value("xapi_app_posts_consumed_today", **app_labels) == sim.day_usage(
                app_id, NOW.date(), NOW
            )
        assert h.value("xapi_credits_total_balance_usd", project="p0") == 275.0
        assert h.value("xapi_credits_prepaid_balance_usd", project="p0") == 250.0
        assert h.value("xapi_credits_free_balance_usd", project="p0") == 25.0
        assert h.value("xapi_credits_available", project="p0") == 1
        assert h.value("xapi_credits_available", project="p1") == 0
        assert h.value("xapi_credits_total_balance_usd", project="p1") is None
        assert h.value("xapi_exporter_poll_success", project="p0") == 1
        assert h.value("xapi_exporter_rate_limit_remaining", project="p0") == 49
        assert (
            h.value(
                "xapi_exporter_upstream_requests_total", project="p0", endpoint="usage", code="200"
            )
            == 1
        )
        other = h.simulator.project("2002")
        assert h.value(
            "xapi_project_posts_consumed", project="p1", project_id="2002"
        ) == other.consumed(NOW)


def test_projection_is_at_least_consumption_and_spend_follows_the_price(tmp_path: Path) -> None:
    with running(_projects(), tmp_path) as h:
        h.start().poll()
        labels = {"project": "p0", "project_id": "1001"}
        consumed = h.value("xapi_project_posts_consumed", **labels)
        projected = h.value("xapi_project_posts_projected", **labels)
        lower = h.value("xapi_project_posts_projected_lower", **labels)
        upper = h.value("xapi_project_posts_projected_upper", **labels)
        assert consumed is not None and projected is not None
        assert lower is not None and upper is not None
        assert consumed <= lower <= projected <= upper
        # ~20k Posts a day for the 17 days left: the projection is in that neighbourhood.
        assert consumed + 17 * 10_000 < projected < consumed + 17 * 40_000
        assert h.value("xapi_project_spend_projected_usd", **labels) == pytest.approx(
            projected * 0.005
        )
        # 2M cap not reached at ~20k a day: no exhaustion series.
        assert h.value("xapi_project_cap_exhaustion_timestamp_seconds", **labels) is None


def test_cap_exhaustion_is_exported_when_the_forecast_reaches_the_cap(tmp_path: Path) -> None:
    busy = sim_project("1001", "token-aaaaaaaaaaaaaaaaaaaaaaaa", mean_daily=120_000.0)
    with running([busy], tmp_path) as h:
        h.start().poll()
        when = h.value(
            "xapi_project_cap_exhaustion_timestamp_seconds", project="p0", project_id="1001"
        )
        assert when is not None
        assert NOW.timestamp() < when < datetime(2026, 12, 10, tzinfo=UTC).timestamp()


FAULTS = [
    (Fault.SERVER_ERROR, Reason.SERVER_ERROR),
    (Fault.UNAUTHORIZED, Reason.UNAUTHORIZED),
    (Fault.FORBIDDEN, Reason.FORBIDDEN),
    (Fault.USAGE_CAPPED, Reason.USAGE_CAPPED),
    (Fault.MALFORMED, Reason.PARSE),
    (Fault.BAD_FIELD, Reason.PARSE),
    (Fault.SLOW, Reason.TIMEOUT),
    (Fault.RATE_LIMIT, Reason.RATE_LIMITED),
]


@pytest.mark.parametrize(("fault", "reason"), FAULTS, ids=[f.value for f, _ in FAULTS])
def test_a_fault_keeps_last_good_values_and_counts_its_reason(
    tmp_path: Path, fault: Fault, reason: Reason
) -> None:
    with running(_projects(), tmp_path) as h:
        h.start(h.config(poll_interval="2s", request_timeout="300ms")).poll()
        p0 = {"project": "p0", "project_id": "1001"}
        before = generate_latest(h.registry).decode()
        consumed = h.value("xapi_project_posts_consumed", **p0)
        other = h.value("xapi_project_posts_consumed", project="p1", project_id="2002")

        h.simulator.set_fault(fault, project_id="1001", delay=1.0, reset_after=1.0)
        h.clock.now += timedelta(minutes=5)
        h.poll()

        assert h.value("xapi_exporter_poll_success", project="p0") == 0
        assert h.value("xapi_exporter_poll_error", project="p0", reason=reason.value) == 1
        errors = h.value(
            "xapi_exporter_upstream_errors_total", project="p0", endpoint="usage", reason=reason
        )
        assert errors is not None and errors >= 1
        assert h.value("xapi_project_posts_consumed", **p0) == consumed
        assert h.value("xapi_project_usage_capped", **p0) == (
            1 if fault is Fault.USAGE_CAPPED else 0
        )
        # The other project is untouched and still polled successfully.
        assert h.value("xapi_exporter_poll_success", project="p1") == 1
        assert h.value(
            "xapi_project_posts_consumed", project="p1", project_id="2002"
        ) == h.simulator.project("2002").consumed(h.clock.now)
        assert other is not None
        assert before.count("xapi_app_posts_consumed{") == generate_latest(
            h.registry
        ).decode().count("xapi_app_posts_consumed{")

        h.simulator.clear_faults()
        if fault is Fault.RATE_LIMIT:
            # No request is allowed before x-rate-limit-reset (1 to 2 s away: it is whole seconds).
            reset = h.value("xapi_exporter_rate_limit_reset_timestamp_seconds", project="p0")
            assert reset is not None and reset - time.time() <= 2.0
            time.sleep(max(0.0, reset - time.time() + 0.05))
        h.poll()
        assert h.value("xapi_exporter_poll_success", project="p0") == 1
        assert h.value("xapi_exporter_poll_error", project="p0", reason=reason.value) == 0
        assert h.value("xapi_project_usage_capped", **p0) == 0
        sim = h.simulator.project("1001")
        assert h.value("xapi_project_posts_consumed", **p0) == sim.consumed(h.clock.now)


def test_server_errors_are_retried_within_the_poll(tmp_path: Path) -> None:
    with running(_projects(), tmp_path) as h:
        h.start(h.config(poll_interval="10s"))
        h.simulator.set_fault(Fault.SERVER_ERROR, project_id="1001", count=2)
        h.poll()
        assert h.value("xapi_exporter_poll_success", project="p0") == 1
        for code, count in (("503", 2), ("200", 1)):
            assert (
                h.value(
                    "xapi_exporter_upstream_requests_total",
                    project="p0",
                    endpoint="usage",
                    code=code,
                )
                == count
            )


def test_a_persistent_server_error_stops_after_the_retry_budget(tmp_path: Path) -> None:
    with running(_projects(), tmp_path) as h:
        h.start(h.config(poll_interval="1h"))
        h.simulator.set_fault(Fault.SERVER_ERROR, project_id="1001")
        h.poll()
        assert h.value("xapi_exporter_poll_success", project="p0") == 0
        sent = h.value(
            "xapi_exporter_upstream_requests_total", project="p0", endpoint="usage", code="503"
        )
        assert sent == 4


def test_the_simulated_rate_limit_reset_is_never_sooner_than_announced(tmp_path: Path) -> None:
    """The flake of test_no_request_is_sent_before_the_rate_limit_reset (issue 10, item 19): the
    simulator cut the reset time with int(), so "2 s" could be 1.0 s, and four polls on a loaded
    machine outlived it (the wall-clock assertion failed, or p0 was polled again)."""
    with running(_projects(), tmp_path) as h:
        for _ in range(20):
            before = time.time()
            h.simulator.set_fault(Fault.RATE_LIMIT, project_id="1001", count=1, reset_after=2.0)
            status, headers, _ = h.simulator.handle("/2/usage/tweets", "Bearer " + _TOKEN_A)
            assert status == 429
            assert int(headers["x-rate-limit-reset"]) >= before + 2.0
            time.sleep(0.013)  # move through the fractions of a second


def test_no_request_is_sent_before_the_rate_limit_reset(tmp_path: Path) -> None:
    with running(_projects(), tmp_path) as h:
        h.start(h.config(poll_interval="1s"))
        # 3 s: the four polls below must end before the reset even on a loaded machine.
        h.simulator.set_fault(Fault.RATE_LIMIT, project_id="1001", count=1, reset_after=3.0)
        h.poll()
        sent = h.simulator.request_count("/2/usage/tweets")
        for _ in range(3):
            h.poll()
        # Only the other project asked for usage in those three polls.
        assert h.simulator.request_count("/2/usage/tweets") == sent + 3
        assert h.value("xapi_exporter_poll_error", project="p0", reason="rate_limited") == 1
        assert h.value("xapi_exporter_rate_limit_remaining", project="p0") == 0
        reset = h.value("xapi_exporter_rate_limit_reset_timestamp_seconds", project="p0")
        assert reset is not None and reset > time.time()
        time.sleep(max(reset - time.time(), 0) + 0.2)
        h.poll()
        assert h.value("xapi_exporter_poll_success", project="p0") == 1


def test_the_simulated_window_refuses_the_51st_request(tmp_path: Path) -> None:
    with running(_projects()[:1], tmp_path) as h:
        h.start(h.config(poll_interval="1s", credits="off"))
        for _ in range(50):
            h.poll()
        assert h.value("xapi_exporter_poll_success", project="p0") == 1
        h.poll()
        assert h.value("xapi_exporter_poll_error", project="p0", reason="rate_limited") == 1
        sent = h.simulator.request_count("/2/usage/tweets")
        h.poll()
        assert h.simulator.request_count("/2/usage/tweets") == sent


def test_scrapes_and_pages_never_reach_the_x_api(tmp_path: Path) -> None:

    with running(_projects(), tmp_path) as h:
        h.start().poll()
        sent = h.simulator.request_count()
        for _ in range(25):
            generate_latest(h.registry)
            landing.render(h.store.states, h.clock(), "/metrics", overdue=frozenset())
        assert h.simulator.request_count() == sent


def test_a_rotated_token_file_is_used_at_the_next_poll(tmp_path: Path) -> None:
    with running(_projects(), tmp_path) as h:
        h.start().poll()
        project = h.simulator.project("1001")
        del h.simulator.projects[project.token]
        project.token = "token-rotated-cccccccccccccccccc"
        h.simulator.projects[project.token] = project
        h.poll()
        assert h.value("xapi_exporter_poll_error", project="p0", reason="unauthorized") == 1
        h.token_file(0).write_text(project.token)
        h.poll()
        assert h.value("xapi_exporter_poll_success", project="p0") == 1


def test_a_deleted_token_file_fails_the_poll_and_its_return_recovers(tmp_path: Path) -> None:
    with running(_projects(), tmp_path) as h:
        h.start().poll()
        token = h.token_file(0).read_text()
        h.token_file(0).unlink()
        sent = h.simulator.request_count()
        h.poll()
        assert h.value("xapi_exporter_poll_error", project="p0", reason="token") == 1
        assert h.value("xapi_project_posts_consumed", project="p0", project_id="1001") is not None
        assert h.simulator.request_count() == sent + 1  # only p1 asked
        h.token_file(0).write_text(token)
        h.poll()
        assert h.value("xapi_exporter_poll_success", project="p0") == 1


@pytest.mark.parametrize(
    "content",
    [
        "Line-one-Qx7Tz9Kp\nLine-two-Wm3Rv8Ls\n",
        "Space-Qx7Tz9Kp Wm3Rv8Ls",
        "Accent-Qx7Tz9Kp\u00e9Wm3Rv8",
    ],
    ids=["line-break", "space", "non-ascii"],
)
def test_a_token_that_cannot_be_a_header_fails_as_token_and_is_never_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    """A token file with a line break inside made the HTTP library refuse the header, quoting
    it; the quote reached the page and the log unredacted (review, 2026-11-30)."""
    for piece in content.split():
        register_test_token(piece)
    with running(_projects(), tmp_path) as h:
        h.start()  # the config's check refuses such a file (test_config): it comes with a rotation
        h.token_file(0).write_text(content)
        sent = h.simulator.request_count()
        h.poll()
        assert h.value("xapi_exporter_poll_error", project="p0", reason="token") == 1
        assert h.simulator.request_count() == sent + 2  # p1's usage and credits only
        page = landing.render(h.store.states, h.clock(), "/metrics", overdue=frozenset())
        assert "not a bearer token" in page
        shown = page + caplog.text + (h.store.states["p0"].status.error_message or "")
        assert find_token_fragments(shown, set(content.split())) == []


def _p0_section(h: Harness) -> str:
    """Project p0's section of the landing page as the web server renders it now."""
    page = landing.render(h.store.states, h.clock(), "/metrics", overdue=h.store.overdue(h.clock()))
    return page.split("<h2>p0")[1].split("</section>")[0]


def test_a_poll_running_past_its_deadline_shows_failed_at_once(tmp_path: Path) -> None:
    """A poll hung where no timeout reaches (a name lookup) left poll_success at 1 until it
    ended, if ever (review, 2026-11-30): past its deadline it now shows failed, reason timeout,
    on /metrics too."""
    with running(_projects(), tmp_path) as h:
        h.start(h.config(credits="off")).poll()
        cache = MetricsCache(h.registry, h.store, h.clock)
        assert h.value("xapi_exporter_poll_success", project="p0") == 1
        h.simulator.set_fault(Fault.SLOW, project_id="1001", delay=1.5)
        sent = h.simulator.request_count()
        poll = threading.Thread(target=h.poll)
        poll.start()
        try:
            deadline = time.monotonic() + 10
            while h.simulator.request_count() == sent:  # p0's request is being answered slowly
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert h.value("xapi_exporter_poll_success", project="p0") == 1  # within its budget
            before = cache.render("")[0]
            h.clock.now += timedelta(minutes=5)  # the budget is 0.9 x poll_interval: 4.5 min
            assert h.value("xapi_exporter_poll_success", project="p0") == 0
            assert h.value("xapi_exporter_poll_error", project="p0", reason="timeout") == 1
            assert h.value("xapi_exporter_poll_error", project="p0", reason="network") == 0
            after = cache.render("")[0]
            assert b'xapi_exporter_poll_success{project="p0"} 0.0' in after
            assert b'xapi_exporter_poll_success{project="p0"} 1.0' in before
            section = _p0_section(h)
            assert "Poll failed (timeout)" in section and "Last poll OK" not in section
        finally:
            poll.join()
        # It did end, and well: its own result stands.
        assert h.value("xapi_exporter_poll_success", project="p0") == 1
        assert h.value("xapi_exporter_poll_error", project="p0", reason="timeout") == 0


def test_a_first_poll_running_past_its_deadline_shows_failed_too(tmp_path: Path) -> None:
    """A configured project has its (empty) state from the start, so a hung first poll shows."""
    with running(_projects(), tmp_path) as h:
        h.start(h.config(credits="off"))
        h.simulator.set_fault(Fault.SLOW, project_id="1001", delay=1.5)
        poll = threading.Thread(target=h.poll)
        poll.start()
        try:
            deadline = time.monotonic() + 10
            while h.simulator.request_count() == 0:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert h.value("xapi_exporter_poll_success", project="p0") is None  # running
            assert "First poll running" in _p0_section(h)
            h.clock.now += timedelta(minutes=5)
            assert h.value("xapi_exporter_poll_success", project="p0") == 0
            assert h.value("xapi_exporter_poll_error", project="p0", reason="timeout") == 1
            section = _p0_section(h)
            assert "Poll failed (timeout)" in section and "First poll running" not in section
        finally:
            poll.join()
        assert h.value("xapi_exporter_poll_success", project="p0") == 1


def test_a_poll_that_never_starts_shows_failed_after_one_interval_and_its_budget(
    tmp_path: Path,
) -> None:
    """Polls run in a pool of 32 threads: polls hung where no timeout reaches take them all, and
    the other projects' polls never start. Their poll_success stayed 1 for ever, their data
    aging (review, 2026-11-30); a stopped scheduler looked the same. The next poll of a project
    is due one interval and one budget (0.9 x interval) after the last ended: 9.5 min here."""
    with running(_projects(), tmp_path) as h:
        h.start(h.config(credits="off"))
        h.clock.now += timedelta(minutes=9, seconds=29)
        assert h.value("xapi_exporter_poll_success", project="p0") is None  # first poll due
        assert "First poll running" in _p0_section(h)
        h.clock.now += timedelta(seconds=1)
        assert h.value("xapi_exporter_poll_success", project="p0") == 0
        assert h.value("xapi_exporter_poll_error", project="p0", reason="timeout") == 1
        assert "Poll failed (timeout)" in _p0_section(h)

        h.poll()
        assert h.value("xapi_exporter_poll_success", project="p0") == 1
        h.clock.now += timedelta(minutes=9, seconds=29)
        assert h.value("xapi_exporter_poll_success", project="p0") == 1
        assert "Last poll OK" in _p0_section(h)
        h.clock.now += timedelta(seconds=1)
        for project in ("p0", "p1"):
            assert h.value("xapi_exporter_poll_success", project=project) == 0
            assert h.value("xapi_exporter_poll_error", project=project, reason="timeout") == 1
        h.poll()
        assert h.value("xapi_exporter_poll_success", project="p0") == 1
        assert h.value("xapi_exporter_poll_error", project="p0", reason="timeout") == 0


def test_the_old_cycle_is_never_served_as_the_new_one(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 12, 9, 23, 50, tzinfo=UTC))
    with running(_projects(), tmp_path, clock) as h:
        h.start().poll()
        p0 = {"project": "p0", "project_id": "1001"}
        old = h.value("xapi_project_posts_consumed", **p0)
        assert old is not None and old > 500_000
        clock.now = datetime(2026, 12, 10, 0, 5, tzinfo=UTC)  # the cap reset; no poll yet
        for name in (
            "xapi_project_posts_consumed",
            "xapi_project_posts_consumed_today",
            "xapi_project_cap_utilization_ratio",
            "xapi_project_spend_usd",
            "xapi_project_posts_projected",
            "xapi_project_cycle_start_timestamp_seconds",
        ):
            assert h.value(name, **p0) is None, name
        assert h.value("xapi_project_cap_posts", **p0) == 2_000_000
        h.poll()
        new = h.value("xapi_project_posts_consumed", **p0)
        sim = h.simulator.project("1001")
        assert new == sim.consumed(clock.now) == sim.consumed_today(clock.now)
        assert new is not None and new < 1_000
        start = datetime(2026, 12, 10, tzinfo=UTC).timestamp()
        assert h.value("xapi_project_cycle_start_timestamp_seconds", **p0) == start


def test_the_overview_page_shape_is_summed_over_the_calendar_month(tmp_path: Path) -> None:
    overview = sim_project("3003", "token-dddddddddddddddddddddddd", shape="overview")
    with running([overview], tmp_path) as h:
        h.start().poll()
        labels = {"project": "p0", "project_id": "3003"}
        month = overview.daily(NOW, 23)  # Nov 1 .. Nov 23
        assert h.value("xapi_project_posts_consumed", **labels) == sum(
            sum(days.values()) for days in month.values()
        )
        assert h.value("xapi_project_cap_posts", **labels) == 2_000_000
        assert h.value("xapi_project_cap_reset_day", **labels) is None
        for field in ("cap_reset_day", "project_usage"):
            assert h.value("xapi_exporter_response_missing_field", project="p0", field=field) == 1
        start = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
        assert h.value("xapi_project_cycle_start_timestamp_seconds", **labels) == start


def test_an_answer_without_days_leaves_today_absent_not_zero(tmp_path: Path) -> None:
    """Only `project_usage` came back: the cycle's total is known, today's share of it is not."""
    days = frozenset({"daily_project_usage", "daily_client_app_usage"})
    bare = sim_project("1001", "token-aaaaaaaaaaaaaaaaaaaaaaaa", omitted_fields=days)
    with running([bare], tmp_path) as h:
        h.start().poll()
        labels = {"project": "p0", "project_id": "1001"}
        assert bare.consumed_today(NOW) > 0
        assert h.value("xapi_project_posts_consumed", **labels) == bare.consumed(NOW)
        for name in (
            "xapi_project_posts_consumed_today",
            "xapi_project_posts_consumed_daily_baseline",
            "xapi_project_data_newest_day_timestamp_seconds",
        ):
            assert h.value(name, **labels) is None, name
        for field in days:
            assert h.value("xapi_exporter_response_missing_field", project="p0", field=field) == 1
        assert h.value("xapi_exporter_poll_success", project="p0") == 1


def test_integers_nulls_and_unknown_fields_parse_to_the_same_numbers(tmp_path: Path) -> None:
    plain = sim_project("1001", "token-aaaaaaaaaaaaaaaaaaaaaaaa", numbers_as_strings=False)
    with running([plain], tmp_path) as h:
        h.start().poll()
        consumed = h.value("xapi_project_posts_consumed", project="p0", project_id="1001")
        assert consumed == plain.consumed(NOW)
    nulls = sim_project("1001", "token-aaaaaaaaaaaaaaaaaaaaaaaa", with_nulls=True)
    (tmp_path / "nulls").mkdir()
    with running([nulls], tmp_path / "nulls") as h:
        h.start().poll()
        assert h.value("xapi_exporter_poll_success", project="p0") == 1
        labels = {"project": "p0", "project_id": "1001", "app_id": "unknown"}
        assert h.value("xapi_app_posts_consumed", **labels) is not None


def test_a_reload_keeps_the_data_of_unchanged_projects_and_drops_removed_ones(
    tmp_path: Path,
) -> None:
    with running(_projects(), tmp_path) as h:
        h.start().poll()
        config = h.config()
        h.poller.reload(replace(config, projects=config.projects[:1]))
        assert h.value("xapi_project_posts_consumed", project="p0", project_id="1001") is not None
        assert h.value("xapi_project_info", project="p1", project_id="2002") is None
        assert h.value("xapi_exporter_config_last_reload_successful") == 1


def test_readiness_waits_for_every_first_poll(tmp_path: Path) -> None:
    with running(_projects(), tmp_path) as h:
        h.start()
        assert not h.poller.ready
        h.poller.poll_all_now()
        assert h.poller.ready


def test_a_slow_project_never_delays_another(tmp_path: Path) -> None:
    with running(_projects(), tmp_path) as h:
        h.start(h.config(request_timeout="10s"))
        h.simulator.set_fault(Fault.SLOW, project_id="1001", delay=3.0)
        h.poller.start()  # the real scheduler: one job per project, first run now
        deadline = time.monotonic() + 10
        while h.store.states["p1"].status.success is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert h.store.states["p1"].status.success is True
        assert h.store.states["p0"].status.success is None  # still waiting on its slow answer
        while h.store.states["p0"].status.success is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert h.store.states["p0"].status.success is True


def test_a_reload_that_removes_a_project_does_not_repoll_the_others(tmp_path: Path) -> None:
    with running(_projects(), tmp_path) as h:
        config = h.config(poll_interval="1h", credits="off")
        h.start(config).poller.start()
        deadline = time.monotonic() + 10
        while not h.poller.ready and time.monotonic() < deadline:
            time.sleep(0.02)
        assert h.simulator.request_count() == 2
        h.poller.reload(replace(config, projects=config.projects[:1]))
        time.sleep(1.0)  # a re-poll would start at once
        assert h.simulator.request_count() == 2
        assert set(h.store.states) == {"p0"}
        h.poller.reload(replace(config, poll_interval=1800.0, projects=config.projects[:1]))
        while h.simulator.request_count() == 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert h.simulator.request_count() == 3  # a changed interval re-schedules, first run now
