"""Faults and load over real loopback: the exporter process against a misbehaving simulated X API,
a flapping upstream, a vanishing token file, a shrinking config, and a storm of scrapers."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import __version__
from exporter.simulator import Fault, SimProject, Simulator
from tests.conftest import find_token_fragments, token_fragments
from tests.harness import sim_project
from tests.servers import Exporter

USAGE_PATH = "/2/usage/tweets"
LAST_LINE = f'xapi_exporter_build_info{{version="{__version__}"}} 1.0\n'
MIB = 1024 * 1024


def _token(tag: str) -> str:
    # Recognisable, and no 8-character piece of it is a word that a log line could hold.
    return f"token-{tag}Kq-" + "a" * 24


# -- reading the exporter -----------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """One scrape, parsed: sample name and labels to value."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
        return cls(samples)

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def total(self, name: str, **labels: str) -> float:
        """Sum of every sample of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def count(self, name: str, **labels: str) -> int:
        wanted = set(labels.items())
        return sum(1 for n, ls in self.samples if n == name and wanted <= ls)


def scrape(exporter: Exporter) -> Metrics:
    answer = httpx.get(f"{exporter.url}/metrics", timeout=5)
    assert answer.status_code == 200, answer.text
    return Metrics.parse(answer.text)


def eventually(
    exporter: Exporter, check: Callable[[Metrics], bool], what: str, timeout: float = 20.0
) -> Metrics:
    """The first scrape for which `check` holds; fails (with the log) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = scrape(exporter)
        if check(metrics):
            return metrics
        assert exporter.proc.poll() is None, exporter.log.read_text()
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}\n{exporter.log.read_text()[-2000:]}")
        time.sleep(0.05)


def usage_requests(simulator: Simulator, project_id: str) -> int:
    """Usage requests the simulator received for one project."""
    seen = list(simulator.requests)
    return sum(1 for _, path, pid in seen if path == USAGE_PATH and pid == project_id)


def _config(directory: Path, simulator: Simulator, names: dict[str, str], extra: str) -> Path:
    """A config with one project per entry of `names` (project_id to name), tokens in files."""
    entries = []
    for project in simulator.projects.values():
        name = names.get(project.project_id)
        if name is None:
            continue
        token_file = directory / f"token-{name}"
        token_file.write_text(project.token + "\n")
        entries.append(f"  - {{name: {name}, bearer_token_file: {token_file}}}\n")
    path = directory / "config.yml"
    path.write_text(f"api_base_url: {simulator.url}\n{extra}projects:\n{''.join(entries)}")
    return path


@contextmanager
def running_exporter(config: Path) -> Iterator[Exporter]:
    """The exporter process on `config`, ready; stopped (killed if need be) whatever happens."""
    exporter = Exporter("--config.file", str(config))
    try:
        exporter.wait_ready()
        yield exporter
    finally:
        exporter.stop()


# -- every fault mode ---------------------------------------------------------------------------

# fault, the reason it is counted under, the `code` label of the requests it answers
FAULTS = [
    (Fault.SERVER_ERROR, "server_error", "503"),
    (Fault.RATE_LIMIT, "rate_limited", "429"),
    (Fault.USAGE_CAPPED, "usage_capped", "429"),
    (Fault.UNAUTHORIZED, "unauthorized", "401"),
    (Fault.FORBIDDEN, "forbidden", "403"),
    (Fault.MALFORMED, "parse", "200"),
    (Fault.BAD_FIELD, "parse", "200"),
    (Fault.SLOW, "timeout", "error"),
    (Fault.CREDITS_DEPLETED, "credits_depleted", "402"),
]
TOKEN_PROJECT = "7777"  # apart from the fault projects' 1001 ... 9009
TIMEOUT = "1s"
SLOW_DELAY = 2.5  # the SLOW fault's answer comes after the timeout
# No credits requests, and 35 days of history (a whole cycle) to keep each answer small.
QUIET = "credits: 'off'\nhistory_days: 35\n"


@dataclass
class Suite:
    simulator: Simulator
    exporter: Exporter
    now: datetime  # the simulator's frozen clock: its data changes only when a test says so
    tmp: Path

    @staticmethod
    def project_id(fault: Fault) -> str:
        index = [f for f, _, _ in FAULTS].index(fault) + 1
        return f"{index}00{index}"

    @staticmethod
    def name(fault: Fault) -> str:
        return f"f-{fault.value}"


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """One exporter process polling ten projects every 500 ms: one per fault mode, one for the
    token-file test. The simulator's rate-limit window is 5 s, so that only the injected
    faults, never the real 50-per-window limit, answer 429; the request timeout leaves a loaded
    machine plenty of time, so that only the SLOW fault times out."""
    now = datetime.now(UTC)
    projects = [
        sim_project(Suite.project_id(fault), _token(f"F{i}"), credits=None)
        for i, (fault, _, _) in enumerate(FAULTS)
    ]
    projects.append(sim_project(TOKEN_PROJECT, _token("T9"), credits=None))
    simulator = Simulator(projects, clock=lambda: now, window_seconds=5.0)
    simulator.start()
    tmp = tmp_path_factory.mktemp("faults")
    names = {Suite.project_id(fault): Suite.name(fault) for fault, _, _ in FAULTS}
    names[TOKEN_PROJECT] = "token-file"
    config = _config(
        tmp, simulator, names, f"poll_interval: 500ms\nrequest_timeout: {TIMEOUT}\n{QUIET}"
    )
    try:
        with running_exporter(config) as exporter:
            yield Suite(simulator, exporter, now, tmp)
    finally:
        simulator.stop()


@dataclass(frozen=True)
class FaultRun:
    """What the exporter served for one project at each stage of its fault."""

    before: Metrics  # the last good poll before the fault
    first: Metrics  # the first scrape that shows the fault
    later: Metrics  # once the fault has failed at least two more requests
    recovered: Metrics  # the first scrape after the fault was cleared that shows a success
    settled: Metrics  # two good polls later


def _stages(
    suite: Suite, checks: dict[Fault, Callable[[Metrics], bool]], what: str
) -> dict[Fault, Metrics]:
    """Per fault, the first scrape for which its check holds (all faults progress together)."""
    found: dict[Fault, Metrics] = {}
    deadline = time.monotonic() + 30.0
    while len(found) < len(checks):
        metrics = scrape(suite.exporter)
        found.update(
            {f: metrics for f, check in checks.items() if f not in found and check(metrics)}
        )
        missing = [f.value for f in checks if f not in found]
        assert time.monotonic() < deadline, f"never {what}: {missing}"
        time.sleep(0.05)
    return found


def _usage(fault: Fault) -> dict[str, str]:
    return {"project": Suite.name(fault), "endpoint": "usage"}


@pytest.fixture(scope="module")
def fault_runs(suite: Suite) -> dict[Fault, FaultRun]:
    """Every fault mode at once, each on its own project: inject, watch, clear, watch."""
    reasons = {fault: reason for fault, reason, _ in FAULTS}
    errors, requests = (
        "xapi_exporter_upstream_errors_total",
        "xapi_exporter_upstream_requests_total",
    )

    def succeeded(fault: Fault) -> Callable[[Metrics], bool]:
        return lambda m: m.get("xapi_exporter_poll_success", project=Suite.name(fault)) == 1

    def failing(fault: Fault) -> Callable[[Metrics], bool]:
        name, reason = Suite.name(fault), reasons[fault]
        return lambda m: m.get("xapi_exporter_poll_error", project=name, reason=reason) == 1

    def grown(fault: Fault, name: str, since: Metrics, **labels: str) -> Callable[[Metrics], bool]:
        start = since.total(name, **_usage(fault), **labels)
        return lambda m: m.total(name, **_usage(fault), **labels) >= start + 2

    before = _stages(suite, {f: succeeded(f) for f in reasons}, "polled")
    for fault in reasons:
        suite.simulator.set_fault(
            fault, project_id=suite.project_id(fault), delay=SLOW_DELAY, reset_after=2.0
        )
    time.sleep(0.5)  # requests already past the fault check finish with the old numbers
    for fault in reasons:  # from now on a good answer would say something new
        suite.simulator.project(suite.project_id(fault)).add_posts(suite.now, 5_000)
    try:
        first = _stages(suite, {f: failing(f) for f in reasons}, "failing")
        later = _stages(
            suite,
            {f: grown(f, errors, before[f], reason=reasons[f]) for f in reasons},
            "failing twice more",
        )
    finally:
        suite.simulator.clear_faults()
    recovered = _stages(suite, {f: succeeded(f) for f in reasons}, "recovered")
    settled = _stages(
        suite,
        {f: grown(f, requests, recovered[f], code="200") for f in reasons},
        "polled twice after recovery",
    )
    return {f: FaultRun(before[f], first[f], later[f], recovered[f], settled[f]) for f in reasons}


@pytest.mark.parametrize(("fault", "reason", "code"), FAULTS, ids=[f.value for f, _, _ in FAULTS])
def test_a_fault_keeps_the_last_good_values_and_counts_it_under_its_reason(
    suite: Suite, fault_runs: dict[Fault, FaultRun], fault: Fault, reason: str, code: str
) -> None:
    run = fault_runs[fault]
    name, project_id = suite.name(fault), suite.project_id(fault)
    labels = {"project": name, "project_id": project_id}
    usage = _usage(fault)
    good = run.before.get("xapi_project_posts_consumed", **labels)
    assert good is not None and good + 5_000 == suite.simulator.project(project_id).consumed(
        suite.now
    )
    apps = run.before.count("xapi_app_posts_consumed", **labels)
    assert apps == 2

    for failing in (run.first, run.later):
        assert failing.get("xapi_exporter_poll_success", project=name) == 0
        assert failing.get("xapi_project_posts_consumed", **labels) == good  # not the new value
        assert failing.get("xapi_project_info", **labels) == 1
        assert failing.count("xapi_app_posts_consumed", **labels) == apps
        assert failing.get("xapi_project_usage_capped", **labels) == (
            1 if fault is Fault.USAGE_CAPPED else 0
        )
        assert failing.get("xapi_project_credits_depleted", **labels) == (
            1 if fault is Fault.CREDITS_DEPLETED else 0
        )
        others = [r for r in ("parse", "timeout", "server_error", "token") if r != reason]
        assert all(
            failing.get("xapi_exporter_poll_error", project=name, reason=other) == 0
            for other in others
        )
    # Freshness shows the failure: no success between the first and the later failing scrape.
    last_success = "xapi_exporter_last_success_timestamp_seconds"
    assert run.first.get(last_success, project=name) == run.later.get(last_success, project=name)
    assert_counters_add_up(run.before, run.later, usage, reason, code)
    sent = run.later.total("xapi_exporter_upstream_requests_total", **usage)
    assert usage_requests(suite.simulator, project_id) >= sent  # only real requests counted

    assert run.recovered.get("xapi_project_posts_consumed", **labels) == good + 5_000
    assert run.recovered.get("xapi_exporter_poll_error", project=name, reason=reason) == 0
    assert run.recovered.get("xapi_project_usage_capped", **labels) == 0
    assert run.recovered.get("xapi_project_credits_depleted", **labels) == 0
    assert (run.recovered.get(last_success, project=name) or 0) > (
        run.later.get(last_success, project=name) or 0
    )
    # Once the fault is gone the errors stop: the next good polls add none.
    errors = "xapi_exporter_upstream_errors_total"
    assert run.settled.total(errors, **usage) == run.recovered.total(errors, **usage)
    assert run.settled.get("xapi_exporter_poll_success", project=name) == 1


def assert_counters_add_up(
    before: Metrics, after: Metrics, usage: dict[str, str], reason: str, code: str
) -> None:
    """Between two scrapes: the fault's reason grew, each of its requests was counted under the
    fault's code, and every request is either a good answer or counted under one reason."""

    def grew(name: str, **labels: str) -> float:
        return after.total(name, **usage, **labels) - before.total(name, **usage, **labels)

    requests, errors = (
        "xapi_exporter_upstream_requests_total",
        "xapi_exporter_upstream_errors_total",
    )
    assert grew(errors, reason=reason) >= 2
    assert grew(requests, code=code) >= grew(errors, reason=reason)
    good = grew(requests, code="200") - grew(errors, reason="parse")
    assert grew(requests) == good + grew(errors)


def test_a_deleted_token_file_fails_polls_without_requests_and_its_return_recovers(
    suite: Suite,
) -> None:
    name, labels = "token-file", {"project": "token-file", "project_id": TOKEN_PROJECT}
    token_file = suite.tmp / f"token-{name}"
    good = eventually(
        suite.exporter,
        lambda m: m.get("xapi_exporter_poll_success", project=name) == 1,
        "token project polled",
    ).get("xapi_project_posts_consumed", **labels)
    assert good is not None
    token = token_file.read_text()
    token_file.unlink()
    try:
        eventually(
            suite.exporter,
            lambda m: m.get("xapi_exporter_poll_error", project=name, reason="token") == 1,
            "token error",
        )
        sent = usage_requests(suite.simulator, TOKEN_PROJECT)
        # Several more polls run (each sets a new duration) and none of them sends a request.
        durations: set[float | None] = set()
        while len(durations) < 4:
            metrics = eventually(
                suite.exporter,
                lambda m: (
                    m.get("xapi_exporter_poll_duration_seconds", project=name) not in durations
                ),
                "another poll",
            )
            durations.add(metrics.get("xapi_exporter_poll_duration_seconds", project=name))
            assert metrics.get("xapi_exporter_poll_error", project=name, reason="token") == 1
            assert metrics.get("xapi_project_posts_consumed", **labels) == good
        assert usage_requests(suite.simulator, TOKEN_PROJECT) == sent
    finally:
        token_file.write_text(token)
    eventually(
        suite.exporter,
        lambda m: m.get("xapi_exporter_poll_success", project=name) == 1,
        "token project recovered",
    )
    assert usage_requests(suite.simulator, TOKEN_PROJECT) > sent


# -- an upstream that flaps at every poll -------------------------------------------------------


MAX_FLAPPING_POLLS = 100


class FlappingSimulator(Simulator):
    """Answers every second usage request of one project with a body that is not JSON."""

    def __init__(self, projects: list[SimProject], flapping: str, **options: Any) -> None:
        super().__init__(projects, **options)
        self.flapping = flapping
        self._seen = 0
        self._seen_lock = threading.Lock()

    def handle(self, raw_path: str, authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        token = (authorization or "").removeprefix("Bearer ").strip()
        project = self.projects.get(token)
        flapping = project is not None and project.project_id == self.flapping
        if flapping and urlsplit(raw_path).path == USAGE_PATH:
            with self._seen_lock:
                self._seen += 1
                if self._seen % 2 == 0:
                    self.set_fault(Fault.MALFORMED, project_id=self.flapping, count=1)
        return super().handle(raw_path, authorization)


def test_an_upstream_that_flaps_at_every_poll_never_loses_values_and_counts_every_poll(
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    projects = [sim_project("1001", _token("Fl1")), sim_project("2002", _token("St2"))]
    simulator = FlappingSimulator(projects, "1001", clock=lambda: now, window_seconds=5.0)
    simulator.start()
    labels = {"project": "flappy", "project_id": "1001"}
    usage = {"project": "flappy", "endpoint": "usage"}
    try:
        config = _config(
            tmp_path,
            simulator,
            {"1001": "flappy", "2002": "steady"},
            f"poll_interval: 200ms\nrequest_timeout: {TIMEOUT}\n{QUIET}",
        )
        with running_exporter(config) as exporter:
            expected = simulator.project("1001").consumed(now)
            seen: dict[int, Metrics] = {}

            def enough() -> bool:
                # Six polls seen one by one, good and malformed ones among them. A loaded machine
                # scrapes slower than the 200 ms polls, so the loop waits for polls, bounded.
                polls = [p for p in seen if p >= 1]
                return len(polls) >= 6 and len({p % 2 for p in polls}) == 2

            while not enough() and max(seen, default=0) < MAX_FLAPPING_POLLS:
                metrics = scrape(exporter)
                # A malformed answer is a 200 too: the 200s count every poll's one request.
                polls = int(metrics.total("xapi_exporter_upstream_requests_total", **usage))
                seen.setdefault(polls, metrics)
                assert exporter.proc.poll() is None, exporter.log.read_text()
                time.sleep(0.03)
            sent = usage_requests(simulator, "1001")
        assert sent >= max(seen)
        for polls, metrics in sorted(seen.items()):
            if polls == 0:
                continue
            ok = polls % 2 == 1  # the 1st answer is good, the 2nd malformed, and so on
            assert metrics.get("xapi_exporter_poll_success", project="flappy") == ok, polls
            assert metrics.get("xapi_exporter_poll_error", project="flappy", reason="parse") == (
                not ok
            )
            assert metrics.get("xapi_project_posts_consumed", **labels) == expected, polls
            assert metrics.count("xapi_app_posts_consumed", **labels) == 2, polls
            parse_errors = metrics.total("xapi_exporter_upstream_errors_total", **usage)
            assert parse_errors == polls // 2, polls
            assert metrics.get("xapi_exporter_poll_success", project="steady") == 1
        assert enough(), sorted(seen)
    finally:
        simulator.stop()


# -- reload -------------------------------------------------------------------------------------


def test_a_reload_that_removes_a_project_drops_all_its_series_and_keeps_the_others(
    tmp_path: Path,
) -> None:
    projects = [sim_project("1001", _token("Rl1")), sim_project("2002", _token("Rl2"))]
    now = datetime.now(UTC)  # frozen: the kept project's numbers cannot move between polls
    simulator = Simulator(projects, clock=lambda: now)
    simulator.start()
    try:
        both = {"1001": "kept", "2002": "removed"}
        config = _config(tmp_path, simulator, both, "poll_interval: 1h\n")
        with running_exporter(config) as exporter:
            before = scrape(exporter)
            for project, project_id in (("kept", "1001"), ("removed", "2002")):
                assert before.get("xapi_project_info", project=project, project_id=project_id)
                assert before.get("xapi_exporter_poll_success", project=project) == 1
            _config(tmp_path, simulator, {"1001": "kept"}, "poll_interval: 1h\n")
            exporter.proc.send_signal(signal.SIGHUP)
            after = eventually(
                exporter,
                lambda m: m.get("xapi_project_info", project="removed", project_id="2002") is None,
                "the removed project gone",
            )
        assert not [key for key in after.samples if ("project", "removed") in key[1]]
        assert after.get("xapi_project_info", project="kept", project_id="1001") == 1
        assert after.get("xapi_project_posts_consumed", project="kept", project_id="1001") == (
            before.get("xapi_project_posts_consumed", project="kept", project_id="1001")
        )
        assert after.get("xapi_exporter_config_last_reload_successful") == 1
        assert "config reloaded" in exporter.log.read_text()
    finally:
        simulator.stop()


# -- a storm of scrapers ------------------------------------------------------------------------

SCRAPERS = 64
STORM_SECONDS = 30.0
WARM_UP_SECONDS = 3.0


def _resident_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        pytest.skip("needs /proc/<pid>/status (Linux)")
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


# what each kind of scraper asks for, and how every complete answer ends
KINDS: list[tuple[str, dict[str, str], str]] = [
    ("/metrics", {"Accept-Encoding": "identity"}, LAST_LINE),
    ("/metrics", {"Accept-Encoding": "gzip"}, LAST_LINE),  # httpx unzips it
    ("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}, "# EOF\n"),
    ("/", {}, "</html>"),
]


def test_64_scrapers_for_30_seconds_get_complete_answers_in_flat_memory_without_upstream_calls(
    tmp_path: Path,
) -> None:
    projects = [sim_project("1001", _token("Sm1")), sim_project("2002", _token("Sm2"))]
    simulator = Simulator(projects)
    simulator.start()
    try:
        config = _config(tmp_path, simulator, {"1001": "p0", "2002": "p1"}, "poll_interval: 1h\n")
        with running_exporter(config) as exporter:
            upstream_before = simulator.request_count()
            assert upstream_before >= 2
            stop = threading.Event()
            failures: list[str] = []
            answers = [0] * SCRAPERS

            def scrape_until_stopped(index: int) -> None:
                path, headers, ending = KINDS[index % len(KINDS)]
                zipped = headers.get("Accept-Encoding") == "gzip"
                with httpx.Client(base_url=exporter.url, headers=headers, timeout=30) as client:
                    while not stop.is_set() and len(failures) < 100:
                        try:
                            answer = client.get(path)
                        except httpx.HTTPError as exc:
                            failures.append(f"{path}: {type(exc).__name__}: {exc}")
                            continue
                        complete = answer.text.endswith(ending) and (
                            not zipped or answer.headers.get("content-encoding") == "gzip"
                        )
                        if answer.status_code == 200 and complete:
                            answers[index] += 1
                        else:
                            failures.append(f"{path} {answer.status_code}: {answer.text[-80:]!r}")

            threads = [
                threading.Thread(target=scrape_until_stopped, args=(i,), daemon=True)
                for i in range(SCRAPERS)
            ]
            for thread in threads:
                thread.start()
            try:
                time.sleep(WARM_UP_SECONDS)
                memory_start = _resident_bytes(exporter.proc.pid)
                time.sleep(STORM_SECONDS - WARM_UP_SECONDS)
                memory_end = _resident_bytes(exporter.proc.pid)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=60)
            upstream_after = simulator.request_count()
            health = httpx.get(f"{exporter.url}/-/healthy", timeout=5)

        assert failures == [], failures[:5]
        assert all(count > 0 for count in answers), answers
        assert health.status_code == 200
        # Scrapes never reach the X API: with poll_interval 1h nothing else could have asked.
        assert upstream_after == upstream_before
        growth = memory_end - memory_start
        assert growth < 20 * MIB, f"resident memory grew by {growth / MIB:.1f} MiB"
    finally:
        simulator.stop()


# -- the suite's token scan (tests/conftest.py) -------------------------------------------------


def test_the_suite_token_scan_finds_any_8_character_piece_but_not_filler() -> None:
    token = _token("Zz9")
    assert "token-Zz" in token_fragments(token)
    assert "aaaaaaaa" not in token_fragments(token)  # filler proves nothing
    assert find_token_fragments(f"err=bad header {token[3:11]} sent", {token}) == ["en-Zz9Kq"]
    assert find_token_fragments(f"project=p0 {'a' * 40} token-0", {token}) == []
    assert find_token_fragments("Authorization: Bearer <redacted>", {token}) == []
