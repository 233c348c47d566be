"""Alert rules over replayed history: Prometheus evaluates them, Python keeps only `for:` state."""

from __future__ import annotations

import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from exporter import backfill
from exporter.config import parse_duration
from exporter.errors import ExporterError, describe

# Prometheus answers at most 11,000 points per series and query; stay well below.
MAX_POINTS_PER_QUERY = 10_000
READY_TIMEOUT = 120.0
MAX_BLOCK_HOURS = 24 * 366 * 4
QUERY_TIMEOUT = 120.0
# free_port: child servers get a port below the kernel's ephemeral range, never twice.
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10_000
_handed_out: set[int] = set()


class RulesError(ExporterError):
    """A rule file cannot be read or used (exit 2)."""


class PrometheusError(ExporterError):
    """Prometheus or promtool cannot be started, or does not answer (exit 1)."""


@dataclass(frozen=True, slots=True)
class AlertRule:
    name: str
    expr: str  # recording rules already inlined: see inline_recording_rules
    hold: float  # for:, seconds
    keep_firing: float  # keep_firing_for:, seconds
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Firing:
    alert: str
    labels: Mapping[str, str]  # the series' labels, the rule's labels and alertname
    start: float  # first evaluation at which the alert was firing
    end: float | None  # first evaluation at which it no longer was; None if firing at the end


def load_rules(paths: Sequence[Path]) -> list[AlertRule]:
    """Alerting rules of the files, each expression with the files' recording rules inlined."""
    recording: dict[str, str] = {}
    alerting: list[dict[str, Any]] = []
    for path in paths:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise RulesError(f"--rules: cannot read {path}: {describe(exc)}") from None
        groups = data.get("groups") if isinstance(data, dict) else None
        if not isinstance(groups, list):
            raise RulesError(f"--rules: {path}: not a Prometheus rule file (no groups list)")
        for group in groups:
            for rule in group.get("rules") or []:
                if "record" in rule:
                    recording[str(rule["record"])] = str(rule["expr"])
                elif "alert" in rule:
                    alerting.append(rule)
    rules = []
    for rule in alerting:
        where = f"--rules: alert {rule['alert']}"
        try:
            hold = parse_duration(str(rule.get("for", "0s")))
            keep = parse_duration(str(rule.get("keep_firing_for", "0s")))
        except ValueError as exc:
            raise RulesError(f"{where}: {exc}") from None
        labels = {str(k): str(v) for k, v in (rule.get("labels") or {}).items()}
        expr = inline_recording_rules(str(rule["expr"]), recording, where)
        rules.append(AlertRule(str(rule["alert"]), expr, hold, keep, labels))
    if not rules:
        raise RulesError("--rules: the rule files hold no alerting rule")
    return rules


def inline_recording_rules(expr: str, recording: Mapping[str, str], where: str) -> str:
    """Replace each reference to a recording rule by its parenthesised expression.

    Prometheus evaluates recording rules only from the moment it runs, so a server started on
    replayed history has no recorded series for the past. A recording rule's series at time t is
    its expression evaluated at t (the thresholds group runs before the alerts, as in the promtool
    tests), so the inlined expression gives the alert the same values, still computed by
    Prometheus. A range over a rule whose expression is a plain selector is inlined as that
    selector with the range; any other range, and label matchers, cannot be and are refused.
    """
    for _ in range(len(recording) + 1):
        changed = False
        for name, body in recording.items():
            new = _inline(expr, name, body, where)
            changed = changed or new != expr
            expr = new
        if not changed:
            return expr
    raise RulesError(f"{where}: recording rules refer to each other in a loop")


# A metric name with optional label matchers: what a range may follow.
_PLAIN_SELECTOR = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*\s*(\{[^{}]*\})?")


def _inline(expr: str, name: str, body: str, where: str) -> str:
    """`expr` with every reference to the recording rule `name` replaced by its `body`."""
    pattern = re.compile(rf"(?<![\w:]){re.escape(name)}(?![\w:])(\s*[{{\[])?")
    selector = _PLAIN_SELECTOR.fullmatch(body.strip()) is not None

    def inlined(match: re.Match[str]) -> str:
        opener = match.group(1)
        if opener is None:
            return f"({body})"
        if opener.strip() == "[" and selector:
            return body.strip() + opener  # `up{job=~"..."}[1h]` is still a selector
        raise RulesError(
            f"{where}: uses recording rule {name} with matchers, or a range over an expression; "
            "the backtest can only inline plain references"
        )

    return pattern.sub(inlined, expr)


def alert_metric_names(rules: Iterable[AlertRule]) -> set[str]:
    """Every identifier in the expressions: the replay writes only the series these may read."""
    return {
        token
        for rule in rules
        for token in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", _without_strings(rule.expr))
    }


def _without_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def firings(
    rule: AlertRule,
    grid: Sequence[float],
    present: Mapping[tuple[tuple[str, str], ...], set[float]],
) -> list[Firing]:
    """Prometheus' alert state machine (pending, firing, keep_firing_for) over the evaluations.

    `present` holds, per label set, the evaluation times at which the expression returned it.
    """
    found = []
    for key, times in present.items():
        # As in Prometheus: the series' labels without its name, then the rule's labels.
        labels = {k: v for k, v in key if k != "__name__"} | {**rule.labels, "alertname": rule.name}
        active_at: float | None = None
        firing_since: float | None = None
        keep_since: float | None = None
        for at in grid:
            if at in times:
                keep_since = None
                if active_at is None:
                    active_at = at
                if firing_since is None and at - active_at >= rule.hold:
                    firing_since = at
                continue
            if active_at is None:
                continue
            if firing_since is not None and rule.keep_firing > 0:
                keep_since = at if keep_since is None else keep_since
                if at - keep_since < rule.keep_firing:
                    continue
            if firing_since is not None:
                found.append(Firing(rule.name, labels, firing_since, at))
            active_at = firing_since = keep_since = None
        if firing_since is not None:
            found.append(Firing(rule.name, labels, firing_since, None))
    return sorted(found, key=lambda f: (f.start, sorted(f.labels.items())))


class PrometheusServer:
    """A `prometheus` child on loopback over a TSDB directory; stopped and reaped on close."""

    def __init__(self, data: Path, workdir: Path, lookback: float) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusError("prometheus is not installed (or not on PATH)")
        config = workdir / "prometheus.yml"
        config.write_text("global: {}\n", encoding="utf-8")
        self.log = workdir / "prometheus.log"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        # Ctrl-C waits until the child is ours to stop: an interrupt inside Popen would orphan it.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.process = self._start(binary, config, data, port, lookback)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _start(
        self, binary: str, config: Path, data: Path, port: int, lookback: float
    ) -> subprocess.Popen[bytes]:
        with self.log.open("wb") as log:
            return subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={data}",
                    # Retention counts back from the newest sample, not from today: keep it all.
                    "--storage.tsdb.retention.time=100y",
                    f"--web.listen-address=127.0.0.1:{port}",
                    f"--query.lookback-delta={int(lookback)}s",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own session: a terminal's Ctrl-C reaches us, and we stop it in order.
                start_new_session=True,
            )

    def wait_ready(self, client: httpx.Client) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited at start: {self._log_tail()}")
            try:
                if client.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise PrometheusError(f"prometheus not ready after {READY_TIMEOUT:.0f}s")

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "no log"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and no outgoing connection will take.

    For a server started as a child process (the backtest's Prometheus; the test suite's and the
    benchmarks' servers). A port from bind(0) lies in the kernel's ephemeral range, from which
    every outgoing connection also takes its local port, so one could hold it before the child
    binds it (seen once in the suite: Alertmanager's "bind: address already in use"). A port
    below that range is only ever taken by an explicit bind; one handed out once in this process
    is not handed out again.
    """
    try:
        low = int(EPHEMERAL_RANGE.read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768  # Linux's default range starts here
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(LOWEST_PORT, max(low, LOWEST_PORT + 1000))
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise PrometheusError(f"no free loopback port between {LOWEST_PORT} and {low}")


def build_tsdb(series: list[backfill.Series], data: Path, workdir: Path) -> None:
    """Write the series as OpenMetrics and let promtool turn them into TSDB blocks."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise PrometheusError("promtool is not installed (or not on PATH)")
    text = workdir / "replay.om"
    with text.open("w", encoding="utf-8") as file:
        file.writelines(backfill.openmetrics(series))
    try:
        created = subprocess.run(
            [
                promtool,
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                # promtool reads the whole file once per block range: few, long blocks.
                f"--max-block-duration={MAX_BLOCK_HOURS}h",
                str(text),
                str(data),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
        )
    finally:
        text.unlink(missing_ok=True)
    if created.returncode != 0:
        last = (created.stderr or created.stdout).strip().splitlines()
        raise PrometheusError(f"promtool could not build the TSDB: {last[-1] if last else '?'}")


@contextmanager
def prometheus_over(series: list[backfill.Series], step: float) -> Iterator[str]:
    """A Prometheus on loopback that holds `series`; yields its URL, leaves nothing behind."""
    workdir = Path(tempfile.mkdtemp(prefix="x-usage-backtest-"))
    server: PrometheusServer | None = None
    try:
        data = workdir / "data"
        build_tsdb(series, data, workdir)
        server = PrometheusServer(data, workdir, lookback=step)
        with httpx.Client() as client:
            server.wait_ready(client)
        yield server.url
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def evaluate(
    url: str,
    rules: Sequence[AlertRule],
    grid: Sequence[float],
    progress: Callable[[int, int, str], None] | None = None,
) -> list[Firing]:
    """Every firing of every rule over `grid`: evaluation times `step` apart, step = grid gap."""
    if not grid:
        return []
    step = grid[1] - grid[0] if len(grid) > 1 else 60.0
    found: list[Firing] = []
    with httpx.Client(base_url=url, timeout=QUERY_TIMEOUT) as client:
        for index, rule in enumerate(rules):
            if progress is not None:
                progress(index, len(rules), rule.name)
            present: dict[tuple[tuple[str, str], ...], set[float]] = {}
            for start in range(0, len(grid), MAX_POINTS_PER_QUERY):
                window = grid[start : start + MAX_POINTS_PER_QUERY]
                for item in _query_range(client, rule, window[0], window[-1], step):
                    key = tuple(sorted(item["metric"].items()))
                    present.setdefault(key, set()).update(float(t) for t, _ in item["values"])
            found.extend(firings(rule, grid, present))
        if progress is not None:
            progress(len(rules), len(rules), "")
    return sorted(found, key=lambda f: (f.start, f.alert))


def _query_range(
    client: httpx.Client, rule: AlertRule, start: float, end: float, step: float
) -> list[dict[str, Any]]:
    params = {"query": rule.expr, "start": start, "end": end, "step": step}
    try:
        answer = client.post("/api/v1/query_range", data=params)
    except httpx.HTTPError as exc:
        raise PrometheusError(f"prometheus at {client.base_url}: {describe(exc)}") from None
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if answer.status_code != 200 or body.get("status") != "success":
        error = body.get("error", f"HTTP {answer.status_code}")
        raise PrometheusError(f"prometheus cannot evaluate alert {rule.name}: {error}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result
