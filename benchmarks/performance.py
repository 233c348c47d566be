"""Performance benchmark: /metrics throughput, X API calls per scraper count, memory, start time."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from benchmarks.loadgen import PLAIN, PROMETHEUS, LoadResult, Variant, load_tool, run_in_child
from exporter.alert_eval import free_port
from exporter.client import usage_params
from exporter.collector import UsageCollector
from exporter.config import parse_config
from exporter.poller import Poller
from exporter.simulator import SimProject, Simulator
from exporter.snapshot import ConfigStatus, Store
from exporter.web import MetricsCache, StartResponse, WebServer

PROJECT_COUNTS = (1, 20, 100)
APPS_PER_PROJECT = 10
SCRAPER_COUNTS = (1, 2, 10)
SCRAPE_EVERY = 0.1  # seconds between two scrapes of one scraper in part 2
DEFAULT_POLL = 300.0  # the exporter's default poll_interval, for the per-hour extrapolation
PROMETHEUS_SCRAPE = 15.0  # a common scrape_interval, for the scrape-time-fetch extrapolation
RATE_LIMIT_PER_HOUR = 50 * 4  # the usage endpoint allows 50 requests per 15 minutes per App
MIB = 1024 * 1024

VARIANTS = (PLAIN, PROMETHEUS)  # what curl asks for, and what Prometheus asks for

TARGET_RATIO = 0.8  # exporter/static requests per second at 20 projects
TARGET_RATIO_PROJECTS = 20
TARGET_RSS_MIB = 60.0  # at 100 projects
TARGET_RSS_PROJECTS = 100


@dataclass(frozen=True, slots=True)
class Options:
    duration: float
    rounds: int
    concurrency: int
    window: float
    poll_interval: float
    loadgen: str
    projects: tuple[int, ...]
    command: str  # as typed, for the report


# -- the simulated X API ------------------------------------------------------------------------


class CountingSimulator(Simulator):
    """The simulator, plus the CPU time it spent answering and the status codes it sent."""

    def __init__(self, projects: list[SimProject]) -> None:
        super().__init__(projects)
        self.cpu = 0.0
        self.statuses: dict[int, int] = {}
        self._count_lock = threading.Lock()

    def handle(self, raw_path: str, authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        started = time.thread_time()  # this thread's CPU: GIL waits are not counted
        answer = super().handle(raw_path, authorization)
        with self._count_lock:
            self.cpu += time.thread_time() - started
            self.statuses[answer[0]] = self.statuses.get(answer[0], 0) + 1
        return answer

    def status_count(self, status: int) -> int:
        with self._count_lock:
            return self.statuses.get(status, 0)


def bench_projects(count: int) -> list[SimProject]:
    projects = []
    for index in range(count):
        project_id = f"1800000000000{index:06d}"
        weights = [1.0 / (rank + 1) for rank in range(APPS_PER_PROJECT)]  # a few Apps dominate
        apps = {f"{project_id[-6:]}{rank:02d}": w / sum(weights) for rank, w in enumerate(weights)}
        projects.append(
            SimProject(
                project_id=project_id,
                token=f"bench-token-{index:03d}",
                apps=apps,
                cap_reset_day=1 + index % 28,
                mean_daily=20_000.0 + 1_000.0 * index,
                growth_per_day=0.002,
                origin=date(2026, 1, 1),
                seed=index,
            )
        )
    return projects


@contextlib.contextmanager
def simulated(count: int) -> Iterator[CountingSimulator]:
    simulator = CountingSimulator(bench_projects(count))
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


# -- the exporter as a child process ------------------------------------------------------------


def http_get(
    port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def rss_mib(pid: int) -> float:
    """VmRSS of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ExporterProcess:
    """`python -m exporter` with a config file that points at the simulator; stderr to a file."""

    def __init__(
        self,
        tmp: Path,
        simulator: Simulator,
        *,
        poll_interval: str = "5m",
        credits: str = "auto",
    ) -> None:
        self.port = free_port()
        self.names = []
        entries = []
        for index, project in enumerate(simulator.projects.values()):
            token_file = tmp / f"token-{index}"
            token_file.write_text(project.token + "\n")
            name = f"p{index:03d}"
            self.names.append(name)
            entries.append(f"  - {{name: {name}, bearer_token_file: {token_file}}}")
        config = tmp / "config.yml"
        config.write_text(
            f"api_base_url: {simulator.url}\n"
            f"poll_interval: {poll_interval}\n"
            "request_timeout: 60s\n"
            f"credits: '{credits}'\n"  # quoted: YAML reads a bare off as false
            "projects:\n" + "\n".join(entries) + "\n"
        )
        self.log = tmp / "exporter.log"
        self._stderr = self.log.open("w")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "--config.file",
                str(config),
                "--web.listen-address",
                f"127.0.0.1:{self.port}",
                "--log.level",
                "warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"exporter exited: {self.log.read_text()}")

    def wait_complete(self, timeout: float = 120.0) -> tuple[float, float]:
        """Seconds from spawn to the first 200 on /-/ready, and to /metrics naming every project."""
        deadline = time.monotonic() + timeout
        ready_at: float | None = None
        wanted = [f'xapi_project_info{{project="{name}"'.encode() for name in self.names]
        while time.monotonic() < deadline:
            self._alive()
            with contextlib.suppress(OSError, http.client.HTTPException):
                if ready_at is None and http_get(self.port, "/-/ready", timeout=2)[0] == 200:
                    ready_at = time.perf_counter() - self.started
                if ready_at is not None:
                    status, _, body = http_get(self.port, "/metrics", PLAIN.headers())
                    if status == 200 and all(marker in body for marker in wanted):
                        return ready_at, time.perf_counter() - self.started
            time.sleep(0.02)
        raise RuntimeError(f"exporter not complete after {timeout}s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._stderr.close()


@contextlib.contextmanager
def running_exporter(tmp: Path, simulator: Simulator, **settings: str) -> Iterator[ExporterProcess]:
    exporter = ExporterProcess(tmp, simulator, **settings)
    try:
        yield exporter
    finally:
        exporter.stop()


# -- the static baseline: the same web stack serving fixed bytes --------------------------------

Response = tuple[list[tuple[str, str]], bytes]
KEPT_HEADERS = ("Content-Type", "Cache-Control", "Content-Encoding", "Content-Length")


class StaticApp:
    """Answers every request with the exposition fetched once from the exporter (by encoding)."""

    def __init__(self, responses: dict[bool, Response]) -> None:
        self._responses = responses

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        headers, body = self._responses["gzip" in environ.get("HTTP_ACCEPT_ENCODING", "")]
        start_response("200 OK", list(headers))
        return [body]


def serve_static(responses: dict[bool, Response], conn: Connection) -> None:
    """Child process: exporter.web.WebServer with StaticApp until terminated."""
    server = WebServer(StaticApp(responses), ("127.0.0.1", 0))
    server.start()
    conn.send(server.port)
    threading.Event().wait()


@contextlib.contextmanager
def static_server(responses: dict[bool, Response]) -> Iterator[tuple[int, int]]:
    """(port, pid) of a freshly spawned static server, stopped on exit."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=serve_static, args=(responses, child), daemon=True)
    process.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("static server did not start")
        port: int = parent.recv()
        assert process.pid is not None
        yield port, process.pid
    finally:
        process.terminate()
        process.join(10)


def fetch_response(port: int, variant: Variant) -> Response:
    status, headers, body = http_get(port, "/metrics", variant.headers())
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    kept = [(name, headers[name]) for name in KEPT_HEADERS if name in headers]
    return kept, body


# -- part 1, 3, 4: throughput, memory, start time -----------------------------------------------


@dataclass
class Cell:
    """The rounds of one (server, request) cell; the median round stands for the cell."""

    rounds: list[LoadResult] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # the server's CPU seconds in each round

    def add(self, result: LoadResult, cpu: float) -> None:
        self.rounds.append(result)
        self.cpu.append(cpu)

    @property
    def cpu_us(self) -> float:
        """Server CPU per answered request: less sensitive to other load than req/s."""
        return statistics.median(
            cpu / r.requests * 1e6 if r.requests else math.nan
            for r, cpu in zip(self.rounds, self.cpu, strict=True)
        )

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.rounds)

    @property
    def rps_range(self) -> str:
        return f"{min(r.rps for r in self.rounds):.0f}-{max(r.rps for r in self.rounds):.0f}"

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.rounds)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.rounds)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)


@dataclass
class SizeResult:
    projects: int
    ready_s: float
    complete_s: float
    start_cpu_s: float
    simulator_cpu_s: float
    series: int
    sizes: dict[str, int] = field(default_factory=dict)  # variant name -> body bytes
    exporter: dict[str, Cell] = field(default_factory=dict)
    static: dict[str, Cell] = field(default_factory=dict)
    rss_warm_mib: float = math.nan
    rss_loaded_mib: float = math.nan
    static_rss_mib: float = math.nan
    miss_ms: dict[str, float] = field(default_factory=dict)  # variant name -> render ms


def measure_size(projects: int, options: Options, wrk: str | None) -> SizeResult:
    with (
        tempfile.TemporaryDirectory(prefix="xue-bench-") as tmp,
        simulated(projects) as simulator,
        running_exporter(Path(tmp), simulator) as exporter,
    ):
        ready, complete = exporter.wait_complete()
        start_cpu = cpu_seconds(exporter.proc.pid)
        simulator_cpu = simulator.cpu
        responses = {variant.gzip: fetch_response(exporter.port, variant) for variant in VARIANTS}
        plain_body = responses[False][1]
        result = SizeResult(
            projects=projects,
            ready_s=ready,
            complete_s=complete,
            start_cpu_s=start_cpu,
            simulator_cpu_s=simulator_cpu,
            series=sum(1 for line in plain_body.splitlines() if line and not line.startswith(b"#")),
            sizes={variant.name: len(responses[variant.gzip][1]) for variant in VARIANTS},
        )
        time.sleep(0.5)  # let the threads of the first requests end before reading RSS
        result.rss_warm_mib = rss_mib(exporter.proc.pid)
        with static_server(responses) as (static_port, static_pid):
            for variant in VARIANTS:
                result.exporter[variant.name] = Cell()
                result.static[variant.name] = Cell()
            # Interleaved rounds, alternating which server goes first, so that a burst of load
            # from elsewhere on the machine falls on both servers alike.
            for index in range(options.rounds):
                for variant in VARIANTS:
                    pair = [
                        (exporter.port, exporter.proc.pid, result.exporter[variant.name]),
                        (static_port, static_pid, result.static[variant.name]),
                    ]
                    for port, pid, cell in pair if index % 2 == 0 else pair[::-1]:
                        cpu_before = cpu_seconds(pid)
                        load = run_load(port, variant, options, wrk)
                        cell.add(load, cpu_seconds(pid) - cpu_before)
            result.static_rss_mib = rss_mib(static_pid)
        result.rss_loaded_mib = rss_mib(exporter.proc.pid)
        result.miss_ms = render_cost(simulator, Path(tmp))
        return result


def run_load(port: int, variant: Variant, options: Options, wrk: str | None) -> LoadResult:
    return run_in_child(
        "127.0.0.1",
        port,
        "/metrics",
        variant.headers(),
        options.duration,
        options.concurrency,
        wrk,
    )


def render_cost(simulator: Simulator, tmp: Path, repeat: int = 5) -> dict[str, float]:
    """Milliseconds of one MetricsCache miss (collect, encode, gzip), in this process.

    The served figures above are cache hits; a scrape right after a poll changed the store pays
    this once. Measured here, wired like cli.serve, because the child process cannot be timed
    from outside without also timing HTTP.
    """
    projects = [
        {"name": f"p{index:03d}", "bearer_token_file": str(tmp / f"token-{index}")}
        for index in range(len(simulator.projects))
    ]
    config = parse_config(
        {"api_base_url": simulator.url, "request_timeout": "60s", "projects": projects},
        source="benchmark",
        base_dir=tmp,
        environ={},
    )
    store = Store(ConfigStatus(config.poll_interval, True, time.time()))
    poller = Poller(config, store)
    try:
        poller.poll_all_now()
    finally:
        poller.stop()
    registry = CollectorRegistry(auto_describe=True)
    registry.register(UsageCollector(store))
    cache = MetricsCache(registry, store, lambda: datetime.now(UTC))
    costs = {}
    for variant in VARIANTS:
        accept = variant.headers()["Accept"]
        timings = []
        for _ in range(repeat):
            store.set_config_status(store.config_status)  # a new generation: the next is a miss
            began = time.perf_counter()
            cache.render(accept)
            timings.append((time.perf_counter() - began) * 1000)
        costs[variant.name] = statistics.median(timings)
    return costs


def python_baseline_mib() -> float:
    """RSS of an idle interpreter that imported nothing: the floor under any Python process."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(1.0)
        return rss_mib(proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=10)


# -- part 2: X API calls against the number of scrapers -----------------------------------------


class ScrapeTimeProxy:
    """json_exporter's design: every scrape fetches the usage endpoint for every project."""

    def __init__(self, simulator: Simulator) -> None:
        upstream = urlsplit(simulator.url)
        tokens = [project.token for project in simulator.projects.values()]
        query = "&".join(f"{key}={value}" for key, value in usage_params(90).items())
        path = f"/2/usage/tweets?{query}"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                lines = []
                for index, token in enumerate(tokens):
                    conn = http.client.HTTPConnection(upstream.hostname or "", upstream.port)
                    try:
                        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
                        answer = conn.getresponse()
                        payload = answer.read()
                    finally:
                        conn.close()
                    if answer.status == 200:
                        usage = json.loads(payload)["data"].get("project_usage", "nan")
                        lines.append(f'xapi_project_posts_consumed{{project="p{index}"}} {usage}')
                    lines.append(f'probe_success{{project="p{index}"}} {int(answer.status == 200)}')
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def scrape(port: int, scrapers: int, window: float) -> int:
    """`scrapers` threads GET /metrics every SCRAPE_EVERY s for `window` s; returns the 200s."""
    done = [0] * scrapers
    stop = time.monotonic() + window

    def scraper(index: int) -> None:
        tick = time.monotonic() + index * SCRAPE_EVERY / scrapers  # spread, as Prometheus does
        while tick < stop:
            time.sleep(max(0.0, tick - time.monotonic()))
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_get(port, "/metrics", PROMETHEUS.headers(), timeout=5)[0] == 200:
                    done[index] += 1
            tick += SCRAPE_EVERY

    threads = [threading.Thread(target=scraper, args=(i,), daemon=True) for i in range(scrapers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done)


@dataclass(frozen=True, slots=True)
class CallsResult:
    design: str
    scrapers: int
    scrapes: int
    calls: int  # requests the simulator received in the window
    rate_limited: int  # of which 429
    per_hour: float  # extrapolated, see the table's header
    per_hour_basis: str


def count_calls(
    simulator: CountingSimulator, port: int, scrapers: int, window: float
) -> tuple[int, int, int]:
    calls, limited = simulator.request_count(), simulator.status_count(429)
    scrapes = scrape(port, scrapers, window)
    return scrapes, simulator.request_count() - calls, simulator.status_count(429) - limited


def measure_calls(options: Options) -> list[CallsResult]:
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="xue-bench-") as tmp,
        simulated(1) as simulator,
        running_exporter(
            Path(tmp), simulator, poll_interval=f"{options.poll_interval:g}s", credits="off"
        ) as exporter,
    ):
        exporter.wait_complete()
        for scrapers in SCRAPER_COUNTS:
            scrapes, calls, limited = count_calls(
                simulator, exporter.port, scrapers, options.window
            )
            per_hour = calls / options.window * options.poll_interval / DEFAULT_POLL * 3600
            results.append(
                CallsResult(
                    "exporter (poll, snapshot)",
                    scrapers,
                    scrapes,
                    calls,
                    limited,
                    per_hour,
                    f"poll_interval {DEFAULT_POLL / 60:g}m",
                )
            )

    with simulated(1) as simulator:
        proxy = ScrapeTimeProxy(simulator)
        try:
            for scrapers in SCRAPER_COUNTS:
                scrapes, calls, limited = count_calls(
                    simulator, proxy.port, scrapers, options.window
                )
                per_scrape = calls / scrapes if scrapes else math.nan
                results.append(
                    CallsResult(
                        "scrape-time fetch (json_exporter)",
                        scrapers,
                        scrapes,
                        calls,
                        limited,
                        per_scrape * scrapers * 3600 / PROMETHEUS_SCRAPE,
                        f"scrape_interval {PROMETHEUS_SCRAPE:g}s",
                    )
                )
        finally:
            proxy.stop()
    return results


# -- report -------------------------------------------------------------------------------------


def machine() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or "unknown",
    )
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kib = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} ({platform.release()})"
    return [
        f"- CPUs (nproc): {len(os.sched_getaffinity(0))}; model: {model}",
        f"- memory: {total_kib / MIB:.1f} GiB",
        f"- Python {platform.python_version()} ({sys.executable})",
        f"- OS: {os_name}",
    ]


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


@dataclass(frozen=True, slots=True)
class CpuSample:
    """Machine-wide busy and total CPU time, and this process tree's share of the busy time."""

    busy: float
    total: float
    ours: float

    @classmethod
    def now(cls) -> CpuSample:
        ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
        clock = os.sysconf("SC_CLK_TCK")
        own = os.times()  # children: every process started here has been waited for
        return cls(
            busy=(user + nice + system + irq + softirq + steal) / clock,
            total=(user + nice + system + idle + iowait + irq + softirq + steal) / clock,
            ours=own.user + own.system + own.children_user + own.children_system,
        )

    def others_since(self, start: CpuSample) -> float:
        """Share of the machine's CPU that other processes used since `start` (0 to 1)."""
        total = self.total - start.total
        others = (self.busy - start.busy) - (self.ours - start.ours)
        return max(0.0, others / total) if total > 0 else math.nan


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def paired_ratios(result: SizeResult, variant: Variant) -> list[float]:
    """exporter/static req/s of each round: the two ran back to back, under the same conditions."""
    pairs = zip(
        result.exporter[variant.name].rounds, result.static[variant.name].rounds, strict=True
    )
    return sorted(exp.rps / static.rps if static.rps else math.nan for exp, static in pairs)


def ratio(result: SizeResult, variant: Variant) -> float:
    return statistics.median(paired_ratios(result, variant))


def ratio_range(result: SizeResult, variant: Variant) -> str:
    ratios = paired_ratios(result, variant)
    return f"{ratios[0]:.2f}-{ratios[-1]:.2f}"


def throughput_rows(results: list[SizeResult]) -> Iterator[list[str]]:
    for result in results:
        for variant in VARIANTS:
            for server, load in (
                ("exporter", result.exporter[variant.name]),
                ("static", result.static[variant.name]),
            ):
                yield [
                    str(result.projects),
                    variant.name,
                    f"{result.sizes[variant.name] / 1024:.1f}",
                    server,
                    f"{load.rps:.0f}",
                    load.rps_range,
                    f"{load.p50_ms:.2f}",
                    f"{load.p99_ms:.2f}",
                    f"{load.cpu_us:.0f}",
                    str(load.errors),
                    f"{ratio(result, variant):.2f}" if server == "exporter" else "",
                    ratio_range(result, variant) if server == "exporter" else "",
                ]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(
    options: Options,
    tool: str,
    sizes: list[SizeResult],
    calls: list[CallsResult],
    baseline_mib: float,
    load_before: str,
    cpu_before: CpuSample,
    elapsed: float,
) -> list[str]:
    out = ["### Machine", "", *machine()]
    out += [
        f"- command: `{options.command}`",
        f"- load average (1/5/15 min) at start: {load_before}; at end: {load_average()}",
        f"- CPU used by other processes during the run: "
        f"{CpuSample.now().others_since(cpu_before):.0%} of the machine's "
        f"{len(os.sched_getaffinity(0))} CPUs",
        f"- load generator: {tool}; {options.rounds} interleaved rounds of "
        f"{options.duration:g} s per cell (median shown), {options.concurrency} concurrent "
        "connections, a new connection per request",
        f"- whole run: {elapsed:.0f} s",
        "",
        f"### /metrics throughput ({APPS_PER_PROJECT} Apps per project)",
        "",
        "`static` is exporter.web.WebServer (wsgiref + ThreadingMixIn) serving the same bytes "
        "from a trivial WSGI app: the limit of the stack. `ratio` is the median over the rounds of "
        "exporter/static req/s, each round's two runs back to back. "
        "`server CPU` is the serving process's user+system time over the requests it answered.",
        "",
    ]
    out += table(
        [
            "projects",
            "request",
            "body KiB",
            "server",
            "req/s",
            "req/s range",
            "p50 ms",
            "p99 ms",
            "server CPU us/req",
            "errors",
            "ratio",
            "ratio range",
        ],
        throughput_rows(sizes),
    )
    out += [
        "",
        "The rows above are MetricsCache hits: the exposition changes only when a poll ends. "
        "One miss (collect, encode, gzip), timed in the benchmark process on the same data:",
        "",
    ]
    out += table(
        ["projects", *(f"{variant.name} miss ms" for variant in VARIANTS)],
        ([str(r.projects), *(f"{r.miss_ms[v.name]:.1f}" for v in VARIANTS)] for r in sizes),
    )
    out += ["", "### Resident memory of the exporter (VmRSS)", ""]
    out += table(
        ["projects", "series", "after warm-up MiB", "after the load MiB", "static server MiB"],
        (
            [
                str(r.projects),
                str(r.series),
                f"{r.rss_warm_mib:.1f}",
                f"{r.rss_loaded_mib:.1f}",
                f"{r.static_rss_mib:.1f}",
            ]
            for r in sizes
        ),
    )
    out += [
        "",
        f"Idle `python -c 'import time; time.sleep(30)'`: {baseline_mib:.1f} MiB.",
        "",
        "### Start to first complete metrics",
        "",
        "From spawning `python -m exporter` to the first 200 on /-/ready and to the first "
        "/metrics that names every project (first polls ask for 90 days, every field, and "
        "credits).",
        "",
    ]
    out += table(
        [
            "projects",
            "/-/ready 200 s",
            "complete /metrics s",
            "exporter CPU s",
            "simulator CPU s (benchmark process)",
        ],
        (
            [
                str(r.projects),
                f"{r.ready_s:.2f}",
                f"{r.complete_s:.2f}",
                f"{r.start_cpu_s:.2f}",
                f"{r.simulator_cpu_s:.2f}",
            ]
            for r in sizes
        ),
    )
    out += [
        "",
        "### X API calls against the number of scrapers (1 project)",
        "",
        f"Each scraper GETs /metrics every {SCRAPE_EVERY * 1000:.0f} ms for {options.window:g} s. "
        f"The exporter polls every {options.poll_interval:g} s (credits off); its calls are "
        f"extrapolated to the default {DEFAULT_POLL / 60:g} m poll_interval. The scrape-time "
        f"fetch proxy's calls per scrape are extrapolated to scrapers scraping every "
        f"{PROMETHEUS_SCRAPE:g} s. The usage endpoint allows {RATE_LIMIT_PER_HOUR} calls per "
        "hour per App.",
        "",
    ]
    out += table(
        ["design", "scrapers", "scrapes", "X API calls", "of which 429", "calls/hour", "basis"],
        (
            [
                c.design,
                str(c.scrapers),
                str(c.scrapes),
                str(c.calls),
                str(c.rate_limited),
                f"{c.per_hour:.0f}",
                c.per_hour_basis,
            ]
            for c in calls
        ),
    )

    out += ["", "### Targets", ""]
    at_target = [r for r in sizes if r.projects == TARGET_RATIO_PROJECTS]
    if at_target:
        ratios = {variant.name: ratio(at_target[0], variant) for variant in VARIANTS}
        shown = ", ".join(f"{name} {value:.2f}x" for name, value in ratios.items())
        ok = all(value >= TARGET_RATIO for value in ratios.values())
        out.append(
            f"- {verdict(ok)}: /metrics at {TARGET_RATIO_PROJECTS} projects >= {TARGET_RATIO}x "
            f"the static server: {shown}"
        )
    else:
        out.append(f"- SKIP: no run at {TARGET_RATIO_PROJECTS} projects")
    exporter_calls = [c.calls for c in calls if c.design.startswith("exporter")]
    polls = options.window / options.poll_interval
    spread = max(exporter_calls) - min(exporter_calls)
    # A window holds polls or polls + 1 depending on phase: one call of jitter is not scrapers.
    ok = spread <= 1 and all(abs(c - polls) <= 1 for c in exporter_calls)
    out.append(
        f"- {verdict(ok)}: X API calls independent of the number of scrapers: "
        f"{', '.join(str(c) for c in exporter_calls)} calls for {SCRAPER_COUNTS} scrapers "
        f"(expected {polls:g} +- 1)"
    )
    at_rss = [r for r in sizes if r.projects == TARGET_RSS_PROJECTS]
    if at_rss:
        worst = max(at_rss[0].rss_warm_mib, at_rss[0].rss_loaded_mib)
        out.append(
            f"- {verdict(worst < TARGET_RSS_MIB)}: RSS at {TARGET_RSS_PROJECTS} projects under "
            f"{TARGET_RSS_MIB:g} MiB: {worst:.1f} MiB"
        )
    else:
        out.append(f"- SKIP: no run at {TARGET_RSS_PROJECTS} projects")
    return out


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.performance", description=__doc__)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per cell")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--window", type=float, default=20.0, help="seconds per scraper count")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds, part 2 only")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--projects",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=PROJECT_COUNTS,
        help="comma-separated project counts (default 1,20,100)",
    )
    args = parser.parse_args(argv)
    return Options(
        args.duration,
        args.rounds,
        args.concurrency,
        args.window,
        args.poll_interval,
        args.loadgen,
        args.projects,
        " ".join(["python -m benchmarks.performance", *(sys.argv[1:] if argv is None else argv)]),
    )


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None, write: Callable[[str], object] = print) -> int:
    """Run every part and print the report; exit 0 whatever the targets say."""
    options = parse_args(argv)
    # SIGTERM (and SIGINT, even when inherited as ignored) unwinds through every `finally`, so
    # the exporter, the static server and the load generator are stopped and temp files removed.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)
    try:
        return _run(options, write)
    except KeyboardInterrupt as exc:
        sys.stderr.write(f"benchmark interrupted ({exc}); child processes stopped\n")
        return 130


def _run(options: Options, write: Callable[[str], object]) -> int:
    wrk = load_tool(options.loadgen)
    tool = f"wrk ({wrk})" if wrk else f"Python raw-socket threads ({options.concurrency})"
    load_before = load_average()
    cpu_before = CpuSample.now()
    started = time.perf_counter()
    baseline = python_baseline_mib()
    sizes = [measure_size(count, options, wrk) for count in options.projects]
    calls = measure_calls(options)
    for line in report(
        options,
        tool,
        sizes,
        calls,
        baseline,
        load_before,
        cpu_before,
        time.perf_counter() - started,
    ):
        write(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
