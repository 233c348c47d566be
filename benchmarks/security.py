"""Security benchmark: valid-scrape latency and the exporter's peak memory while the upstream or the
clients on its port attack it (docs/security.md quotes the figures). Loopback only, bounded."""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

from exporter.simulator import Fault
from tests.harness import sim_project
from tests.servers import Exporter
from tests.test_faults import QUIET, _config
from tests.test_security import MODES, HostileSimulator, _token, gzip_bomb, huge_answer, peak_rss

MIB = 1024 * 1024


@contextmanager
def exporter_on(hostile: bool, poll_interval: str, projects: int = 20) -> Iterator[Exporter]:
    gzip_bomb(), huge_answer()  # built once, before the clock starts
    now = datetime.now(UTC)
    sims = [sim_project(f"{i + 1}00{i + 1}", _token(i), credits=None) for i in range(projects)]
    modes = list(MODES)
    plan = {p.project_id: modes[i % len(modes)] for i, p in enumerate(sims[:-2])} if hostile else {}
    simulator = HostileSimulator(sims, plan, clock=lambda: now, window_seconds=5.0)
    simulator.start()
    names = {p.project_id: f"p{i:02d}" for i, p in enumerate(sims)}
    extra = f"poll_interval: {poll_interval}\nrequest_timeout: 1s\n{QUIET}"
    config = _config(Path(tempfile.mkdtemp()), simulator, names, extra)
    exporter = Exporter("--config.file", str(config))
    try:
        exporter.wait_ready()
        for project_id, mode in plan.items():
            if mode == "trickle":
                simulator.set_fault(Fault.TRICKLE, project_id=project_id, delay=0.3)
        simulator.hostile.set()
        yield exporter
    finally:
        exporter.stop()
        simulator.stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrapes(exporter: Exporter, seconds: float, during: Callable[[], None] | None = None) -> str:
    timings: list[float] = []
    cpu_before = cpu_seconds(exporter.proc.pid)
    end = time.monotonic() + seconds
    with httpx.Client() as client:
        while time.monotonic() < end:
            if during is not None:
                during()
            began = time.monotonic()
            client.get(f"{exporter.url}/metrics").raise_for_status()
            timings.append(time.monotonic() - began)
            time.sleep(0.05)
    p50 = statistics.median(timings) * 1000
    p99 = statistics.quantiles(timings, n=100)[98] * 1000
    peak = peak_rss(exporter.proc.pid) / MIB
    cpu = (cpu_seconds(exporter.proc.pid) - cpu_before) / seconds
    return f"| {len(timings)} | {p50:.1f} ms | {p99:.1f} ms | {peak:.0f} MiB | {cpu:.2f} |"


def slow_clients(exporter: Exporter, count: int) -> Callable[[], None]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", exporter.port), timeout=5)
        sock.setblocking(False)
        sockets.append(sock)
    last = [0.0]

    def trickle() -> None:
        if time.monotonic() - last[0] < 1:
            return
        last[0] = time.monotonic()
        for index, sock in enumerate(sockets):
            try:
                sock.send(b"G")
            except OSError:  # dropped by the exporter: come back, as an attacker would
                sock.close()
                sockets[index] = socket.create_connection(("127.0.0.1", exporter.port))
                sockets[index].setblocking(False)

    return trickle


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| case | scrapes | p50 | p99 | peak RSS | exporter CPU (s/s) |")
    print("|---|---|---|---|---|---|")
    with exporter_on(hostile=False, poll_interval="5m") as exporter:
        print("| 20 projects, quiet upstream, polls every 5m " + scrapes(exporter, args.seconds))
    with exporter_on(hostile=False, poll_interval="500ms") as exporter:
        print("| 20 projects, good answers every 500ms " + scrapes(exporter, args.seconds))
    with exporter_on(hostile=True, poll_interval="500ms") as exporter:
        print("| 18 of 20 projects hostile, every 500ms " + scrapes(exporter, args.seconds))
    with exporter_on(hostile=False, poll_interval="5m") as exporter:
        during = slow_clients(exporter, 600)
        print("| 600 clients trickling heads " + scrapes(exporter, args.seconds, during))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
