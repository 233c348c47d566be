"""Command line: flags, subcommands, wiring and exit codes (0 ok, 1 failure, 2 bad input)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import NoReturn

from prometheus_client import CollectorRegistry

from exporter import __version__, backfill, history, logs, report, webconfig
from exporter.alert_eval import PrometheusError, RulesError, load_rules
from exporter.backtest import TraceError
from exporter.backtest import run as backtest_run
from exporter.backtest_render import stderr_progress, to_json, to_table
from exporter.backtest_sources import (
    answer_histories,
    check_flags,
    demo_targets,
    demo_with_crossings,
    shipped_rules,
    trace_history_from_flags,
)
from exporter.client import XApiClient, fetch_usage, read_token
from exporter.collector import UsageCollector
from exporter.config import Config, ProjectConfig, TokenSource, load_config, parse_duration
from exporter.errors import ConfigError, TokenError, UpstreamError, describe
from exporter.parse import UsageReport
from exporter.poller import Poller, utc_now
from exporter.simulator import Simulator, demo_projects
from exporter.snapshot import ConfigStatus, Store
from exporter.web import App, MetricsCache, Routes, WebServer, WsgiApp, parse_listen_address

log = logging.getLogger("exporter")

PROG = "x-usage-exporter"
DEFAULT_LISTEN = ":9879"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEMO_POLL_INTERVAL = 30.0
# Kept days change once a UTC day per project (and when the API revises one): a write a minute
# at most loses nothing the next answers do not bring back (they carry the last 90 days).
HISTORY_WRITE_SECONDS = 60.0


class _Parser(argparse.ArgumentParser):
    """One line on stderr and exit code 2 for bad flags, instead of argparse's usage dump."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def _add_config_flag(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--config.file",
        dest="config_file",
        metavar="PATH",
        required=required,
        help="YAML configuration; without it X_BEARER_TOKEN alone monitors one project",
    )


def _add_log_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log.level", dest="log_level", choices=logs.LEVELS, default="info")
    parser.add_argument("--log.format", dest="log_format", choices=logs.FORMATS, default="logfmt")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Prometheus exporter for X API pay-per-use usage.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _add_config_flag(parser)
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"where to serve (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--web.telemetry-path", dest="telemetry_path", default="/metrics", metavar="PATH"
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        help="TLS and basic auth, in the exporter-toolkit web config format",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="serve two simulated X API projects (production heading for its cap, research over "
        "its budget): no token, no network",
    )
    parser.add_argument(
        "--history.file",
        dest="history_file",
        metavar="PATH",
        help="keep each project's daily usage here across restarts (the API sends 90 days; the "
        "forecast reads a year ago from it)",
    )
    _add_log_flags(parser)
    return parser


def build_check_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=f"{PROG} check-config", description="Validate the config and exit.")
    _add_config_flag(parser)
    return parser


def _add_source_flags(parser: argparse.ArgumentParser) -> None:
    _add_config_flag(parser)
    parser.add_argument("--demo", action="store_true", help="ask the embedded simulated X API")


def build_report_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=f"{PROG} report", description="Usage report of one billing cycle.")
    _add_source_flags(parser)
    parser.add_argument("--cycle", choices=[w.value for w in report.Which], default="current")
    parser.add_argument("--format", choices=[f.value for f in report.Format], default="table")
    parser.add_argument(
        "--by",
        choices=[b.value for b in report.By],
        default="app",
        help="break the cycle down per App (default) or per UTC day",
    )
    return parser


def build_backfill_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{PROG} backfill",
        description="Write the daily history as OpenMetrics for "
        "`promtool tsdb create-blocks-from openmetrics`.",
    )
    _add_source_flags(parser)
    parser.add_argument("--out", required=True, metavar="FILE", help="where to write")
    parser.add_argument(
        "--step", default="1h", metavar="DURATION", help="sample spacing within a day (1h)"
    )
    parser.add_argument("--job", default="x-usage-exporter", help="job label of your scrape job")
    parser.add_argument(
        "--instance",
        default=None,
        metavar="HOST:PORT",
        help="instance label of the live scrape target; without it the backfilled series lack "
        "the label the live ones have",
    )
    return parser


def build_backtest_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{PROG} backtest",
        description="Replay the daily history through the forecast and the alert rules, "
        "evaluated by Prometheus: when each alert would have fired, how early, false pages.",
    )
    _add_source_flags(parser)
    parser.add_argument(
        "--trace", metavar="FILE.csv", help="daily history as CSV rows date,posts[,app_id]"
    )
    parser.add_argument("--cap", type=int, help="with --trace: the monthly Post cap")
    parser.add_argument(
        "--reset-day", type=int, default=1, help="with --trace: day of month the cap resets (1)"
    )
    parser.add_argument("--budget-usd", type=float, help="with --trace: monthly budget")
    parser.add_argument("--spending-limit-usd", type=float, help="with --trace: spending limit")
    parser.add_argument(
        "--post-read-usd", type=float, default=0.005, help="with --trace: price per Post read"
    )
    parser.add_argument(
        "--rules",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="rule files to judge (default: the shipped alerts/rules.yml and thresholds.yml)",
    )
    parser.add_argument("--step", default="1h", metavar="DURATION", help="evaluation step (1h)")
    parser.add_argument("--format", choices=["table", "json"], default="table")
    parser.add_argument(
        "--prometheus.url",
        dest="prometheus_url",
        metavar="URL",
        help="query this Prometheus, which already holds the series, instead of starting one",
    )
    return parser


Command = Callable[[argparse.Namespace], int]


def _subcommands() -> dict[str, tuple[Callable[[], argparse.ArgumentParser], Command]]:
    return {
        "check-config": (build_check_parser, check_config),
        "report": (build_report_parser, run_report),
        "backfill": (build_backfill_parser, run_backfill),
        "backtest": (build_backtest_parser, run_backtest),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    subcommands = _subcommands()
    try:
        if args and args[0] in subcommands:
            build, run = subcommands[args[0]]
            return run(build().parse_args(args[1:]))
        return serve(build_parser().parse_args(args))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


def _config_errors(exc: ConfigError) -> int:
    for problem in exc.problems:
        sys.stderr.write(f"{PROG}: config error: {problem}\n")
    return EXIT_USAGE


def check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        return _config_errors(exc)
    for warning in config.warnings():
        sys.stderr.write(f"{PROG}: warning: {warning}\n")
    names = ", ".join(project.name for project in config.projects)
    sys.stdout.write(f"{config.source}: ok, {len(config.projects)} project(s): {names}\n")
    return EXIT_OK


Fetched = list[tuple[ProjectConfig, UsageReport]]


def _fetch_all(
    config: Config, progress: Callable[[int, int, str], None] | None = None
) -> tuple[Fetched, list[str]]:
    """The usage answer of every project that answered, and one line per project that did not."""
    client = XApiClient(config.api_base_url, timeout=config.request_timeout)
    fetched: Fetched = []
    failures: list[str] = []
    try:
        for index, project in enumerate(config.projects):
            if progress is not None:
                progress(index, len(config.projects), project.name)
            try:
                token = read_token(project.token)
                answer = fetch_usage(
                    client,
                    token,
                    config.history_days,
                    deadline=time.monotonic() + 3 * config.request_timeout,
                    attempts=[],
                )
            except (UpstreamError, TokenError) as exc:
                failures.append(f"project {project.name}: {exc}")
                continue
            fetched.append((project, answer))
        if progress is not None:
            progress(len(config.projects), len(config.projects), "")
    finally:
        client.close()
    return fetched, failures


def _one_shot_config(
    args: argparse.Namespace, *, backtest: bool = False
) -> tuple[Config, Simulator | None] | int:
    """The config to fetch with; under --demo the simulator it points at (the backtest's demo has
    a cap, budget and limit that its history crosses)."""
    if args.demo and args.config_file:
        sys.stderr.write(f"{PROG}: error: --demo and --config.file exclude each other\n")
        return EXIT_USAGE
    if args.demo:
        now = datetime.now(UTC)
        simulator = Simulator(demo_with_crossings(now) if backtest else demo_projects(now))
        simulator.start()
        config = _demo_config(simulator)
        return (demo_targets(config) if backtest else config), simulator
    try:
        return load_config(args.config_file), None
    except ConfigError as exc:
        return _config_errors(exc)


def _one_shot_fetch(
    args: argparse.Namespace,
    progress: Callable[[int, int, str], None] | None = None,
    *,
    backtest: bool = False,
) -> tuple[Config, Fetched, int] | int:
    """Config, the answers of the projects that answered and the exit code for report and
    backfill (1 when a project failed: its error is on stderr), or the exit code alone."""
    loaded = _one_shot_config(args, backtest=backtest)
    if isinstance(loaded, int):
        return loaded
    config, simulator = loaded
    try:
        fetched, failures = _fetch_all(config, progress)
    finally:
        if simulator is not None:
            simulator.stop()
    for failure in failures:
        sys.stderr.write(f"{PROG}: error: {failure}\n")
    return config, fetched, EXIT_FAILURE if failures else EXIT_OK


def run_report(args: argparse.Namespace) -> int:
    loaded = _one_shot_fetch(args)
    if isinstance(loaded, int):
        return loaded
    config, fetched, code = loaded
    if not fetched:
        return code
    now = datetime.now(UTC)
    which = report.Which(args.cycle)
    lines = [report.project_line(p, answer, config, now, which) for p, answer in fetched]
    sys.stdout.write(report.render(lines, report.Format(args.format), report.By(args.by)))
    return code


def _progress_bar(done: int, total: int, name: str) -> None:
    """Progress on stderr: a redrawn bar on a terminal, one line per project otherwise."""
    width = 30
    filled = width * done // max(total, 1)
    text = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {name}"
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{text:<70}" + ("\n" if done == total else ""))
    elif name:
        sys.stderr.write(f"fetching {done + 1}/{total}: {name}\n")
    sys.stderr.flush()


def run_backfill(args: argparse.Namespace) -> int:
    try:
        step = parse_duration(args.step)
    except ValueError as exc:
        sys.stderr.write(f"{PROG}: error: --step: {exc}\n")
        return EXIT_USAGE
    if not 60 <= step <= 86400:
        sys.stderr.write(f"{PROG}: error: --step: must be between 1m and 1d\n")
        return EXIT_USAGE
    out = Path(args.out)
    # Checked before any request: a bad path must not cost the projects' rate limits first.
    if not out.name or out.name in {".", ".."} or out.is_dir() or not out.parent.is_dir():
        sys.stderr.write(f"{PROG}: error: --out: not a file path in an existing directory\n")
        return EXIT_USAGE
    loaded = _one_shot_fetch(args, _progress_bar)
    if isinstance(loaded, int):
        return loaded
    config, fetched, code = loaded
    if not fetched:
        return code
    now = datetime.now(UTC)
    base = {"job": args.job, **({"instance": args.instance} if args.instance else {})}
    built = [
        backfill.project_series(project.name, answer, config, now, int(step), base)
        for project, answer in fetched
    ]
    for note in (item.note for item in built if item.note):
        sys.stderr.write(f"note: {note}\n")
    series = [item for project in built for item in project.series]
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8") as file:
            file.writelines(backfill.openmetrics(series))
        partial.replace(out)  # never leave a half-written file under the real name
    except OSError as exc:
        sys.stderr.write(f"{PROG}: error: --out: cannot write {out}: {exc.strerror}\n")
        partial.unlink(missing_ok=True)
        return EXIT_FAILURE
    samples = sum(len(item.samples) for item in series)
    sys.stderr.write(f"wrote {samples} samples in {len(series)} series to {out}\n")
    if not args.instance:
        sys.stderr.write(
            "note: no --instance: the series carry no instance label, unlike the live scrape's; "
            "pass the one Prometheus gives this exporter's target to join them\n"
        )
    sys.stderr.write(
        f"next: promtool tsdb create-blocks-from openmetrics --max-block-duration=720h {out} "
        "<prometheus data dir>\n"
    )
    return code


def run_backtest(args: argparse.Namespace) -> int:
    problem = check_flags(args)
    if problem:
        sys.stderr.write(f"{PROG}: error: {problem}\n")
        return EXIT_USAGE
    step = parse_duration(args.step)
    try:
        rules = load_rules(args.rules or shipped_rules())
        code = EXIT_OK
        if args.trace:
            histories = [trace_history_from_flags(args)]
        else:
            loaded = _backtest_fetch(args)
            if isinstance(loaded, int):
                return loaded
            config, fetched, now, code = loaded
            histories = answer_histories(config, fetched, now)
        result = backtest_run(histories, rules, step, args.prometheus_url, progress=stderr_progress)
    except (RulesError, TraceError) as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return EXIT_USAGE
    except PrometheusError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    render = to_json if args.format == "json" else to_table
    sys.stdout.write(render(result))
    return code


def _backtest_fetch(args: argparse.Namespace) -> tuple[Config, Fetched, datetime, int] | int:
    """The 90 days of history of every project that answered (the demo's with crossings to
    judge) and the exit code (1 when a project failed: its error is on stderr)."""
    now = datetime.now(UTC)
    loaded = _one_shot_fetch(args, _progress_bar, backtest=True)
    if isinstance(loaded, int):
        return loaded
    config, fetched, code = loaded
    return (config, fetched, now, code) if fetched else code


def _demo_config(simulator: Simulator) -> Config:
    """Point the exporter at the embedded simulator; tokens pass through the environment."""
    projects = []
    for index, project in enumerate(simulator.projects.values()):
        variable = f"X_USAGE_EXPORTER_DEMO_TOKEN_{index}"
        os.environ[variable] = project.token
        name = "production" if index == 0 else "research"
        # Production stays within its budget; research is already over its budget.
        budget, limit = (20_000.0, 25_000.0) if index == 0 else (300.0, 1_000.0)
        projects.append(ProjectConfig(name, TokenSource(env=variable), budget, limit))
    return Config(
        projects=tuple(projects),
        api_base_url=simulator.url,
        poll_interval=DEMO_POLL_INTERVAL,
        request_timeout=DEMO_POLL_INTERVAL / 6,
        source="--demo",
    )


def serve(args: argparse.Namespace) -> int:
    logs.setup(args.log_level, args.log_format)
    try:
        address = parse_listen_address(args.listen_address)
    except ValueError as exc:
        sys.stderr.write(f"{PROG}: error: --web.listen-address: {exc}\n")
        return EXIT_USAGE
    if not args.telemetry_path.startswith("/"):
        sys.stderr.write(f"{PROG}: error: --web.telemetry-path: must start with /\n")
        return EXIT_USAGE
    if args.demo and args.config_file:
        sys.stderr.write(f"{PROG}: error: --demo and --config.file exclude each other\n")
        return EXIT_USAGE

    if args.history_file:
        directory = Path(args.history_file).parent
        if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
            sys.stderr.write(
                f"{PROG}: error: --history.file: {directory} is not a directory this process "
                "can write to\n"
            )
            return EXIT_USAGE
    web_config: webconfig.LiveWebConfig | None = None
    if args.web_config_file:
        try:
            web_config = webconfig.LiveWebConfig(
                args.web_config_file, webconfig.load(args.web_config_file)
            )
        except ConfigError as exc:
            return _config_errors(exc)

    simulator: Simulator | None = None
    if args.demo:
        simulator = Simulator(demo_projects(datetime.now(UTC)))
        simulator.start()
        config = _demo_config(simulator)
    else:
        try:
            config = load_config(args.config_file)
        except ConfigError as exc:
            return _config_errors(exc)
    for warning in config.warnings():
        log.warning("config warning", extra=logs.fields(source=config.source, warning=warning))

    store = Store(ConfigStatus(config.poll_interval, True, time.time()))
    history_file: history.HistoryFile | None = None
    if args.history_file:
        history_file = history.HistoryFile(Path(args.history_file), store)
        history_file.load()
    poller = Poller(config, store, kept=history_file.kept_for if history_file else None)
    registry = CollectorRegistry()
    registry.register(UsageCollector(store))
    reload_lock = threading.Lock()

    no_reload = "--demo has no config file to re-read" if args.demo else None

    def reload() -> str | None:
        with reload_lock:
            try:
                new = load_config(args.config_file)
                if web_config is not None:
                    web_config.reload()
            except ConfigError as exc:
                poller.reload_failed()
                log.error(
                    "reload failed",
                    extra=logs.fields(kept="running config", err="; ".join(exc.problems)),
                )
                return "; ".join(exc.problems)
            try:
                poller.reload(new)
            except Exception as exc:  # never half-silent: the reload is reported failed
                poller.reload_failed()
                log.exception("reload failed", extra=logs.fields(err=describe(exc)))
                return f"internal error: {describe(exc)}"
            log.info(
                "config reloaded", extra=logs.fields(source=new.source, projects=len(new.projects))
            )
            for warning in new.warnings():
                log.warning("config warning", extra=logs.fields(source=new.source, warning=warning))
            return None

    routes = Routes(args.telemetry_path, lambda: poller.ready, reload, no_reload)
    app: WsgiApp = App(routes, MetricsCache(registry, store, utc_now), store, utc_now)
    if web_config is not None:
        app = web_config.wrap(app)
    try:
        server = WebServer(app, address, web_config.tls if web_config else None)
    except OSError as exc:
        sys.stderr.write(f"{PROG}: error: cannot listen on {args.listen_address}: {exc.strerror}\n")
        poller.stop()
        return EXIT_FAILURE

    stop = threading.Event()

    def reload_on_signal() -> None:
        if no_reload is None:
            reload()
        else:
            log.info("reload skipped", extra=logs.fields(reason=no_reload))

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            threading.Thread(target=reload_on_signal, name="reload", daemon=True).start()
        else:
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)

    server.start()
    poller.start()
    log.info(
        "listening",
        extra=logs.fields(
            address=args.listen_address,
            port=server.port,
            projects=len(config.projects),
            poll_interval=logs.seconds(config.poll_interval),
            demo=args.demo,
        ),
    )
    if history_file is not None:
        threading.Thread(
            target=_keep_history, args=(history_file, stop), name="history", daemon=True
        ).start()
    stop.wait()
    log.info("shutting down")
    server.stop()
    poller.stop()
    if history_file is not None:
        history_file.save(utc_now())
    if simulator is not None:
        simulator.stop()
    return EXIT_OK


def _keep_history(history_file: history.HistoryFile, stop: threading.Event) -> None:
    """Write the history file at once (a volume that cannot be written shows from the start),
    then every HISTORY_WRITE_SECONDS while something in it changed."""
    history_file.save(utc_now())
    while not stop.wait(HISTORY_WRITE_SECONDS):
        history_file.save(utc_now())


if __name__ == "__main__":
    raise SystemExit(main())
