"""Reloads under running polls: a poll held open across a reload ends in a store that holds exactly
the configured projects, keeps its rate-limit wait, and is never cut short by a new client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from exporter.simulator import Fault, SimProject, Simulator
from tests.harness import FakeClock, Harness, sim_project

USAGE_PATH = "/2/usage/tweets"


class HeldSimulator(Simulator):
    """Holds the next usage request of one project until released; then answers it as usual, or
    with a rate-limit 429 whose reset is a minute ahead."""

    def __init__(self, projects: list[SimProject], **options: Any) -> None:
        super().__init__(projects, **options)
        self.held: str | None = None
        self.rate_limit = False
        self.arrived = threading.Event()
        self.released = threading.Event()
        self.answered = threading.Event()

    def hold(self, project_id: str, *, rate_limit: bool = False) -> None:
        self.rate_limit = rate_limit
        self.held = project_id

    def handle(self, raw_path: str, authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        project = self.projects.get((authorization or "").removeprefix("Bearer ").strip())
        if (
            project is None
            or project.project_id != self.held
            or urlsplit(raw_path).path != USAGE_PATH
        ):
            return super().handle(raw_path, authorization)
        self.held = None
        self.arrived.set()
        self.released.wait(30)
        if self.rate_limit:
            self.set_fault(Fault.RATE_LIMIT, project_id=project.project_id, count=1, reset_after=60)
        try:
            return super().handle(raw_path, authorization)
        finally:
            self.answered.set()


@contextmanager
def held(tmp: Path, *project_ids: str) -> Iterator[tuple[Harness, HeldSimulator]]:
    projects = [
        sim_project(pid, f"token-rl{pid}Kq-" + "c" * 24, credits=None) for pid in project_ids
    ]
    clock = FakeClock()
    simulator = HeldSimulator(projects, clock=clock)
    simulator.start()
    harness = Harness(simulator, clock, tmp)
    try:
        yield harness, simulator
    finally:
        if hasattr(harness, "poller"):
            harness.poller.stop()
        simulator.released.set()
        simulator.stop()


def _hold_a_poll(harness: Harness, simulator: HeldSimulator, project_id: str, **kw: bool) -> None:
    """Start polling every second and wait until a poll of `project_id` is held upstream."""
    simulator.hold(project_id, **kw)
    harness.poller.start()
    assert simulator.arrived.wait(10), "no poll arrived"


def _release(simulator: HeldSimulator) -> None:
    simulator.released.set()
    assert simulator.answered.wait(10)
    time.sleep(0.5)  # the poll ends and writes (or not) its state


def _series_of(harness: Harness, project: str) -> list[str]:
    return [
        sample.name
        for family in harness.registry.collect()
        for sample in family.samples
        if sample.labels.get("project") == project
    ]


def test_a_poll_that_ends_after_its_project_was_removed_does_not_bring_it_back(
    tmp_path: Path,
) -> None:
    with held(tmp_path, "1001", "2002") as (harness, simulator):
        harness.start(harness.config(poll_interval="1s"))
        _hold_a_poll(harness, simulator, "2002")
        kept = harness.config(poll_interval="1s")
        harness.poller.reload(
            type(kept)(**{**_fields(kept), "projects": kept.projects[:1]})  # p1 removed
        )
        _release(simulator)
        assert set(harness.store.states) == {"p0"}
        assert _series_of(harness, "p1") == []
        assert harness.value("xapi_exporter_poll_success", project="p0") == 1


def test_a_rate_limit_that_lands_on_a_replaced_poller_holds_back_its_successor(
    tmp_path: Path,
) -> None:
    with held(tmp_path, "1001") as (harness, simulator):
        harness.start(harness.config(poll_interval="1s"))
        _hold_a_poll(harness, simulator, "1001", rate_limit=True)
        # A new budget replaces the project's poller while its poll is held.
        config = harness.config(poll_interval="1s")
        project = config.projects[0]
        changed = type(project)(project.name, project.token, budget_usd=100.0)
        harness.poller.reload(type(config)(**{**_fields(config), "projects": (changed,)}))
        _release(simulator)
        sent = simulator.request_count(USAGE_PATH)
        time.sleep(2.5)  # two more polls of the new poller
        assert simulator.request_count(USAGE_PATH) == sent  # the reset is a minute away
        assert harness.value("xapi_exporter_poll_error", project="p0", reason="rate_limited") == 1
        assert set(harness.store.states) == {"p0"}


@pytest.mark.parametrize("change", ["request_timeout", "api_base_url"])
def test_a_reload_that_replaces_the_client_lets_the_running_poll_finish(
    tmp_path: Path, change: str
) -> None:
    with held(tmp_path, "1001") as (harness, simulator):
        harness.start(harness.config(poll_interval="1m"))
        _hold_a_poll(harness, simulator, "1001")
        before = harness.store.states["p0"].status
        new = {"request_timeout": "3s"} if change == "request_timeout" else {}
        if change == "api_base_url":
            new["api_base_url"] = simulator.url.replace("127.0.0.1", "localhost")
        harness.poller.reload(harness.config(poll_interval="1m", **new))
        _release(simulator)
        status = harness.store.states["p0"].status
        assert status is not before
        assert status.success, status.error_message
        assert harness.value("xapi_exporter_poll_success", project="p0") == 1


def _fields(config: Any) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def test_a_reload_keeps_the_time_a_kept_project_began_and_dates_an_added_one(
    tmp_path: Path,
) -> None:
    """XApiUsageDataStale timed a project that never succeeded from the exporter-wide reload
    time: every reload silenced it for 35 minutes (review, 2026-11-30)."""
    name = "xapi_exporter_project_configured_timestamp_seconds"
    with held(tmp_path, "1001", "2002") as (harness, _):
        full = harness.config()
        only_p0 = type(full)(**{**_fields(full), "projects": full.projects[:1]})
        started = harness.clock.now.timestamp()
        harness.start(only_p0)
        assert harness.value(name, project="p0") == started
        assert harness.value(name, project="p1") is None

        harness.clock.now += timedelta(hours=1)
        harness.poller.reload(full)  # p0 kept (its settings unchanged), p1 added
        assert harness.value(name, project="p0") == started
        assert harness.value(name, project="p1") == started + 3600

        harness.clock.now += timedelta(hours=1)
        changed = harness.config(poll_interval="10m")  # a global change replaces every poller
        harness.poller.reload(changed)
        assert harness.value(name, project="p0") == started
        assert harness.value(name, project="p1") == started + 3600
