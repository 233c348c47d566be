"""The demo shows every path a user wants to see, on any date: a cap on its way, a budget overrun,
credits present and absent, upstream errors now and then and a failed poll."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from exporter.cli import _demo_config
from exporter.collector import UsageCollector
from exporter.poller import Poller
from exporter.simulator import Simulator, demo_projects
from exporter.snapshot import ConfigStatus, Store
from tests.harness import FAST_RETRY, FakeClock

# The demo keeps its cycle about twelve days old, so the edges that matter are the calendar's:
# a month's first minutes, the reset day clamped to 28 after a 31st (fifteen days into the cycle),
# a leap day, the last second of a year and the minute before a cycle's reset day.
DATES = [
    datetime(2026, 3, 1, 0, 0, 30, tzinfo=UTC),
    datetime(2027, 1, 12, 12, 0, tzinfo=UTC),
    datetime(2028, 2, 29, 8, 0, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(2026, 3, 12, 23, 59, tzinfo=UTC),
    datetime(2026, 7, 15, 14, 45, tzinfo=UTC),
]


@pytest.fixture
def demo_at(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[CollectorRegistry, datetime, list[float | None]]]:
    now: datetime = request.param
    clock = FakeClock(now)
    simulator = Simulator(demo_projects(now), clock=clock)
    simulator.start()
    config = _demo_config(simulator)
    store = Store(ConfigStatus(config.poll_interval, True, time.time()))
    poller = Poller(config, store, clock=clock, retry=FAST_RETRY)
    registry = CollectorRegistry()
    registry.register(UsageCollector(store, clock=clock))
    research = {"project": "research"}
    try:
        successes = []  # research's poll result after each poll
        for _ in range(7):
            poller.poll_all_now()
            successes.append(registry.get_sample_value("xapi_exporter_poll_success", research))
        yield registry, now, successes
    finally:
        poller.stop()
        simulator.stop()


@pytest.mark.parametrize("demo_at", DATES, indirect=True, ids=lambda d: d.isoformat())
def test_the_demo_shows_every_path_on_any_date(
    demo_at: tuple[CollectorRegistry, datetime, list[float | None]],
) -> None:
    registry, now, successes = demo_at

    def value(name: str, project: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"project": project, **labels})

    def project_value(name: str, project: str) -> float | None:
        ids = {"production": "1460987654321098752", "research": "1570012345678901248"}
        return value(name, project, project_id=ids[project])

    # production: projected to reach its cap before the cycle ends, within its budget
    exhaustion = project_value("xapi_project_cap_exhaustion_timestamp_seconds", "production")
    cycle_end = project_value("xapi_project_cycle_end_timestamp_seconds", "production")
    assert exhaustion is not None and cycle_end is not None
    assert now.timestamp() < exhaustion < cycle_end
    utilization = project_value("xapi_project_cap_utilization_ratio", "production")
    assert utilization is not None and utilization < 1
    projected_spend = project_value("xapi_project_spend_projected_usd", "production")
    budget = project_value("xapi_project_budget_usd", "production")
    assert projected_spend is not None and budget is not None and projected_spend < budget
    assert value("xapi_credits_total_balance_usd", "production") == 1510.0

    # research: over its budget already, nowhere near its cap, no credits endpoint
    spend = project_value("xapi_project_spend_usd", "research")
    budget = project_value("xapi_project_budget_usd", "research")
    assert spend is not None and budget is not None and spend > budget
    assert project_value("xapi_project_cap_exhaustion_timestamp_seconds", "research") is None
    assert value("xapi_credits_available", "research") == 0
    assert value("xapi_credits_total_balance_usd", "research") is None

    # errors now and then: a 503 every seventh request, retried, and from the third poll on a run
    # of 503s longer than a poll's attempts: that poll fails, the next ones succeed again
    errors = value(
        "xapi_exporter_upstream_errors_total", "research", endpoint="usage", reason="server_error"
    )
    assert successes == [1, 1, 0, 1, 1, 1, 1]
    assert errors == 5  # four attempts of the failed poll, one retried hiccup
    assert value("xapi_exporter_poll_success", "production") == 1
