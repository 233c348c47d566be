"""--history.file: the kept days survive a restart, a damaged or oversized file never stops the
exporter, a failed write is visible, and a project's days are never another project's."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter import history
from exporter.collector import UsageCollector
from exporter.config import ProjectConfig, TokenSource
from exporter.forecast import KEEP_DAYS
from exporter.simulator import SimProject, Simulator
from exporter.snapshot import ConfigStatus, KeptDays, ProjectState, Store
from tests.harness import NOW, one_project_config, running, sim_project
from tests.servers import Exporter
from tests.test_security import MIB, RSS_CEILING, peak_rss

DAY = timedelta(days=1)
TOKEN = "history-token-Qx7Tz9KpWm3Rv8Ls"


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    sim = Simulator([sim_project("1001", TOKEN)])
    sim.start()
    yield sim
    sim.stop()


def _config(tmp: Path, sim: Simulator) -> Path:
    return one_project_config(tmp, sim, TOKEN)


def _history_text(project: SimProject, now: datetime, days: int, name: str = "p0") -> str:
    """A history file holding the simulated project's `days` complete days before `now`."""
    per_app = project.daily(now - DAY, days)
    first = min(next(iter(per_app.values())))
    posts = [sum(app[first + k * DAY] for app in per_app.values()) for k in range(days)]
    return json.dumps(
        {
            "version": history.VERSION,
            "projects": {
                name: {
                    "project_id": project.project_id,
                    "first_day": first.isoformat(),
                    "posts": posts,
                }
            },
        }
    )


def _metric(exporter: Exporter, line_start: str) -> float | None:
    for line in exporter.metrics().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def _wait_for(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def test_the_kept_days_survive_a_restart(tmp_path: Path, simulator: Simulator) -> None:
    """The API sends 90 days; the file brings the 420 of the last run back, and a clean stop
    writes them with what the answers added."""
    now = datetime.now(UTC)
    file = tmp_path / "history.json"
    file.write_text(_history_text(simulator.project("1001"), now, 420))
    exporter = Exporter(
        "--config.file", str(_config(tmp_path, simulator)), "--history.file", str(file)
    )
    try:
        exporter.wait_ready()
        oldest = datetime.combine(now.date() - 420 * DAY, datetime.min.time(), UTC)
        metric = 'xapi_exporter_history_oldest_day_timestamp_seconds{project="p0"}'
        assert _metric(exporter, metric) == oldest.timestamp()
        assert _metric(exporter, "xapi_exporter_history_file_load_success") == 1
    finally:
        assert exporter.stop() == 0
    kept = history.load(file)
    assert kept["p0"].project_id == "1001"
    assert len(kept["p0"].days) == 420
    assert max(kept["p0"].days) == now.date() - DAY  # yesterday, from the answer


def test_a_damaged_file_is_moved_aside_and_the_exporter_serves(
    tmp_path: Path, simulator: Simulator
) -> None:
    file = tmp_path / "history.json"
    damaged = '{"version": 1, "projects": {"p0": {"project_id": "1001", "first_day": "2025-'
    file.write_text(damaged)
    exporter = Exporter(
        "--config.file", str(_config(tmp_path, simulator)), "--history.file", str(file)
    )
    try:
        exporter.wait_ready()
        assert _metric(exporter, "xapi_exporter_history_file_load_success") == 0
        assert (tmp_path / "history.json.unreadable").read_text() == damaged  # kept for a human
        metric = 'xapi_exporter_history_oldest_day_timestamp_seconds{project="p0"}'
        assert _metric(exporter, metric) is not None
    finally:
        assert exporter.stop() == 0
    assert "history file unreadable" in exporter.log.read_text()
    assert len(history.load(file)["p0"].days) >= 89  # a new file, from the answers
    assert "Traceback" not in exporter.log.read_text()


def test_a_file_beyond_its_bound_is_refused_at_once(tmp_path: Path, simulator: Simulator) -> None:
    """17 MiB, over the 16 MiB bound: refused before it is read, in time and memory."""
    file = tmp_path / "history.json"
    with file.open("w") as handle:
        handle.write('{"version": 1, "projects": {"p0": {"posts": [')
        handle.write("1," * (history.MAX_FILE_BYTES // 2 + MIB))
        handle.write("1]}}}")
    started = time.monotonic()
    exporter = Exporter(
        "--config.file", str(_config(tmp_path, simulator)), "--history.file", str(file)
    )
    try:
        exporter.wait_ready()
        assert time.monotonic() - started < 20
        assert _metric(exporter, "xapi_exporter_history_file_load_success") == 0
        assert httpx.get(f"{exporter.url}/metrics", timeout=5).status_code == 200
        assert peak_rss(exporter.proc.pid) < RSS_CEILING
    finally:
        assert exporter.stop() == 0
    assert "larger than" in exporter.log.read_text()


def test_a_history_file_in_a_missing_directory_is_a_flag_error(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "exporter", "--demo", "--history.file", str(tmp_path / "no" / "h")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "--history.file" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ({"project_id": "1", "first_day": "2026-01-01", "posts": [1] * (KEEP_DAYS + 1)}, "posts"),
        ({"project_id": "1", "first_day": "2026-01-01", "posts": [-1]}, "posts[0]"),
        ({"project_id": "1", "first_day": "2026-01-01", "posts": [1.5]}, "posts[0]"),
        ({"project_id": "1", "first_day": "2026-01-01", "posts": [10**16]}, "posts[0]"),
        ({"project_id": "", "first_day": "2026-01-01", "posts": []}, "project_id"),
        ({"project_id": "1", "first_day": "yesterday", "posts": []}, "first_day"),
        ({"first_day": "2026-01-01", "posts": []}, "project_id"),
        ({"project_id": "1", "first_day": "2026-01-01"}, "posts"),
    ],
    ids=[
        "too-many-days",
        "negative",
        "fraction",
        "too-large",
        "empty-id",
        "bad-date",
        "no-id",
        "no-posts",
    ],
)
def test_a_file_entry_out_of_bounds_is_refused_naming_it(
    tmp_path: Path, entry: dict[str, object], named: str
) -> None:
    file = tmp_path / "history.json"
    file.write_text(json.dumps({"version": 1, "projects": {"p0": entry}}))
    with pytest.raises(history.HistoryFileError) as caught:
        history.load(file)
    assert str(file) in str(caught.value) and named in str(caught.value)


def test_more_projects_than_the_bound_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "history.json"
    entry = {"project_id": "1", "first_day": "2026-01-01", "posts": [1]}
    file.write_text(json.dumps({"version": 1, "projects": {f"p{k}": entry for k in range(1001)}}))
    with pytest.raises(history.HistoryFileError, match="more than 1000"):
        history.load(file)


def _store_with(kept: KeptDays | None) -> Store:
    store = Store(ConfigStatus(300.0, True, 0.0))
    project = ProjectConfig("p0", TokenSource(env="X"), None, None)
    store.put(ProjectState(project, kept=kept))
    return store


def _scrape(store: Store) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(UsageCollector(store, clock=lambda: NOW))
    return registry


def test_a_failed_write_is_visible_until_a_write_works(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    days = MappingProxyType({date(2026, 11, 20): 5, date(2026, 11, 21): 7})
    store = _store_with(KeptDays.of("1001", days))
    keeper = history.HistoryFile(directory / "history.json", store)
    keeper.load()  # no file yet: the first start
    assert keeper.kept_for("p0") is None
    registry = _scrape(store)
    assert registry.get_sample_value("xapi_exporter_history_file_write_success") is None

    directory.rmdir()  # the volume went away
    keeper.save(NOW)
    assert registry.get_sample_value("xapi_exporter_history_file_write_success") == 0
    assert (
        registry.get_sample_value("xapi_exporter_history_file_last_write_timestamp_seconds") is None
    )

    directory.mkdir()
    keeper.save(NOW)
    assert registry.get_sample_value("xapi_exporter_history_file_write_success") == 1
    written = registry.get_sample_value("xapi_exporter_history_file_last_write_timestamp_seconds")
    assert written == NOW.timestamp()
    assert history.load(directory / "history.json")["p0"].days == days
    assert list(directory.iterdir()) == [directory / "history.json"]  # no temporary file left


def test_a_write_happens_only_when_kept_days_changed(tmp_path: Path) -> None:
    store = _store_with(KeptDays.of("1001", {date(2026, 11, 20): 5}))
    file = tmp_path / "history.json"
    keeper = history.HistoryFile(file, store)
    keeper.save(NOW)
    file.write_text("left alone")
    keeper.save(NOW + DAY)  # the same kept days: nothing to write
    assert file.read_text() == "left alone"
    state = store.states["p0"]
    store.put(ProjectState(state.project, kept=KeptDays.of("1001", {})))
    keeper.save(NOW + DAY)
    assert file.read_text() != "left alone"


def test_seeded_days_join_the_answers_only_for_the_same_x_project(tmp_path: Path) -> None:
    """A history file's days for p0 are kept when p0's token still answers for project 1001;
    when it now answers for another project they are dropped, not mixed in."""
    project = sim_project("1001", "token-aaaaaaaaaaaaaaaaaaaaaaaa")
    old = {NOW.date() - k * DAY: 1_000 for k in range(100, 400)}
    for seed_id, expected in (("1001", 300 + 89), ("7777", 89)):
        with running([project], tmp_path) as h:
            h.start(kept={"p0": KeptDays.of(seed_id, old)})
            h.poll()
            kept = h.store.states["p0"].kept
            assert kept is not None and kept.project_id == "1001"
            assert len(kept.days) == expected
            oldest = datetime.combine(min(kept.days), datetime.min.time(), UTC)
            metric = "xapi_exporter_history_oldest_day_timestamp_seconds"
            assert h.value(metric, project="p0") == oldest.timestamp()


def test_the_file_keeps_projects_left_out_of_the_config_within_its_bounds(tmp_path: Path) -> None:
    today = NOW.date()
    recent = KeptDays.of("9", {today - 5 * DAY: 1})
    stale = KeptDays.of("8", {today - (KEEP_DAYS + 1) * DAY: 1})
    configured = KeptDays.of("1001", {today - DAY: 3})
    store = _store_with(configured)
    entries = {"p9": recent, "p8": stale, "p0": KeptDays.of("1001", {today - 9 * DAY: 1})}
    assert history.merged(entries, store.states, today) == {"p0": configured, "p9": recent}

    many = {f"x{k}": KeptDays.of("9", {today - (1 + k % 400) * DAY: 1}) for k in range(1200)}
    kept = history.merged(many, store.states, today)
    assert len(kept) == 1000 and kept["p0"] is configured  # the configured one first
    newest = {name: max(days.days) for name, days in many.items()}
    left_out = set(many) - set(kept)
    assert max(newest[n] for n in left_out) <= min(newest[n] for n in kept if n != "p0")


def test_a_project_removed_by_a_reload_and_added_back_gets_its_days_back(tmp_path: Path) -> None:
    project = sim_project("1001", "token-aaaaaaaaaaaaaaaaaaaaaaaa")
    file = tmp_path / "history.json"
    old = {NOW.date() - k * DAY: 1_000 for k in range(100, 400)}
    history.write(file, history.dumps({"p0": KeptDays.of("1001", old)}))
    with running([project], tmp_path) as h:
        h.start(history_file=file)
        assert h.history is not None
        h.poll()
        full = h.store.states["p0"].kept
        assert full is not None and len(full.days) == 300 + 89
        h.history.save(NOW)

        config = h.poller.config
        h.poller.reload(replace(config, projects=()))  # p0 left out for a while
        assert "p0" not in h.store.states
        h.history.save(NOW)
        assert history.load(file)["p0"] == full  # still in the file

        h.poller.reload(config)  # and back
        assert h.store.states["p0"].kept == full


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[" * 100_000, "not JSON"),
        ('{"version": 1, "projects": {"' + "n" * 200 + '": {}}}', "longer than 128"),
        ('{"version": 2, "projects": {}}', "version 1"),
        ('{"version": 1}', "projects"),
    ],
    ids=["deep-nesting", "long-name", "other-version", "no-projects"],
)
def test_a_file_of_another_shape_is_refused_naming_why(
    tmp_path: Path, text: str, named: str
) -> None:
    file = tmp_path / "history.json"
    file.write_text(text)
    with pytest.raises(history.HistoryFileError) as caught:
        history.load(file)
    assert named in str(caught.value) and len(str(caught.value)) < 400
