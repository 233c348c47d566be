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
from pathlib import Path

import httpx

from tests.servers import Exporter
from tests.test_security import hostile_exporter, peak_rss

MIB = 1024 * 1024


@contextmanager
def exporter_on(hostile: bool, poll_interval: str, projects: int = 20) -> Iterator[Exporter]:
    tmp = Path(tempfile.mkdtemp())
    with hostile_exporter(tmp, projects, poll_interval, hostile=hostile) as (_, exporter, _):
        yield exporter


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
