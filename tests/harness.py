"""Test harness: the simulator on loopback, token files, an in-process exporter wired like cli."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from exporter.client import RetryPolicy
from exporter.collector import UsageCollector
from exporter.config import Config, parse_config
from exporter.history import HistoryFile
from exporter.poller import Poller
from exporter.simulator import SimProject, Simulator
from exporter.snapshot import ConfigStatus, KeptDays, Store
from tests.conftest import register_test_token

NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
FAST_RETRY = RetryPolicy(base=0.01, cap=0.05)


class FakeClock:
    """A settable clock shared by the simulator and the exporter."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def sim_project(project_id: str, token: str, **overrides: object) -> SimProject:
    settings: dict[str, object] = {
        "apps": {f"{project_id}01": 0.7, f"{project_id}02": 0.3},
        "cap": 2_000_000,
        "cap_reset_day": 10,
        "mean_daily": 20_000.0,
        "seed": int(project_id[-1]) if project_id[-1].isdigit() else 1,
        "origin": date(2026, 9, 1),
    }
    settings.update(overrides)
    register_test_token(token)
    return SimProject(project_id=project_id, token=token, **settings)  # type: ignore[arg-type]


@dataclass
class Harness:
    simulator: Simulator
    clock: FakeClock
    tmp: Path
    store: Store = field(init=False)
    poller: Poller = field(init=False)
    registry: CollectorRegistry = field(init=False)
    history: HistoryFile | None = field(init=False, default=None)

    def config(self, **overrides: object) -> Config:
        """A config with one project per simulated one, tokens in files under tmp."""
        projects = []
        for index, project in enumerate(self.simulator.projects.values()):
            token_file = self.tmp / f"token-{index}"
            if not token_file.exists():
                token_file.write_text(project.token + "\n")
            projects.append({"name": f"p{index}", "bearer_token_file": str(token_file)})
        data: dict[str, object] = {
            "api_base_url": self.simulator.url,
            "poll_interval": "5m",
            "request_timeout": "2s",
            "projects": projects,
        }
        data.update(overrides)
        return parse_config(data, source="test", base_dir=self.tmp, environ={})

    def start(
        self,
        config: Config | None = None,
        kept: Mapping[str, KeptDays] | None = None,
        history_file: Path | None = None,
    ) -> Harness:
        """`kept`: days kept in an earlier run, by project name; `history_file`: read them from
        that file, as --history.file does (then `self.history` writes it)."""
        config = config or self.config()
        self.store = Store(ConfigStatus(config.poll_interval, True, time.time()))
        seeds: Callable[[str], KeptDays | None] | None = None
        if kept is not None:
            seeds = kept.get
        self.history = None
        if history_file is not None:
            self.history = HistoryFile(history_file, self.store)
            self.history.load()
            seeds = self.history.kept_for
        self.poller = Poller(config, self.store, clock=self.clock, retry=FAST_RETRY, kept=seeds)
        self.registry = CollectorRegistry()
        self.registry.register(UsageCollector(self.store, clock=self.clock))
        return self

    def poll(self) -> None:
        self.poller.poll_all_now()

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def token_file(self, index: int) -> Path:
        return self.tmp / f"token-{index}"


@contextmanager
def running(
    projects: list[SimProject], tmp: Path, clock: FakeClock | None = None
) -> Iterator[Harness]:
    fake = clock or FakeClock()
    simulator = Simulator(projects, clock=fake)
    simulator.start()
    harness = Harness(simulator, fake, tmp)
    try:
        yield harness
    finally:
        if hasattr(harness, "poller"):
            harness.poller.stop()
        simulator.stop()


def one_project_config(directory: Path, simulator: Simulator, token: str) -> Path:
    """config.yml for an exporter process: project p0 of `simulator`, its token in a file,
    hourly polls (only the first one matters to a test), credits off."""
    (directory / "token").write_text(token + "\n")
    path = directory / "config.yml"
    path.write_text(
        f"api_base_url: {simulator.url}\npoll_interval: 1h\nrequest_timeout: 2s\n"
        "credits: 'off'\nprojects: [{name: p0, bearer_token_file: token}]\n"
    )
    return path
