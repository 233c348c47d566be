"""Loopback HTTP load generator: wrk when installed, else raw-socket threads in a child process."""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

# What Prometheus 2.x sends when it scrapes: OpenMetrics preferred, gzip accepted.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@dataclass(frozen=True, slots=True)
class Variant:
    """The request headers of one kind of scrape."""

    name: str
    accept: str
    gzip: bool

    def headers(self) -> dict[str, str]:
        headers = {"Accept": self.accept}
        if self.gzip:
            headers["Accept-Encoding"] = "gzip"
        return headers


PLAIN = Variant("text, identity", "text/plain", gzip=False)
PROMETHEUS = Variant("OpenMetrics, gzip", PROMETHEUS_ACCEPT, gzip=True)


@dataclass(frozen=True, slots=True)
class LoadResult:
    tool: str
    requests: int  # completed with a 200
    errors: int  # anything else: refused, reset, non-200
    seconds: float
    p50_ms: float
    p99_ms: float
    bytes_per_response: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (nan when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def request_bytes(host: str, port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{key}: {value}" for key, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _one_request(address: tuple[str, int], request: bytes) -> tuple[bool, int]:
    """One connection, one request, read to EOF (the server speaks HTTP/1.0 and closes)."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(262144)
            if not chunk:
                break
            chunks.append(chunk)
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    return head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), len(body)


def python_load(
    host: str, port: int, path: str, headers: dict[str, str], duration: float, concurrency: int
) -> LoadResult:
    """`concurrency` threads, each sending one request after the other until `duration` is up."""
    request = request_bytes(host, port, path, headers)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    sizes = [0] * concurrency
    start = time.perf_counter()
    deadline = start + duration

    def worker(index: int) -> None:
        own = latencies[index]
        while True:
            began = time.perf_counter()
            if began >= deadline:
                return
            try:
                ok, size = _one_request((host, port), request)
            except OSError:
                ok, size = False, 0
            if ok:
                own.append(time.perf_counter() - began)
                sizes[index] = size
            else:
                errors[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    merged = sorted(value for own in latencies for value in own)
    return LoadResult(
        tool=f"python ({concurrency} threads, 1 process)",
        requests=len(merged),
        errors=sum(errors),
        seconds=elapsed,
        p50_ms=percentile(merged, 0.50) * 1000,
        p99_ms=percentile(merged, 0.99) * 1000,
        bytes_per_response=max(sizes),
    )


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _WRK_UNITS[match.group(2)]


def parse_wrk(output: str, duration: float, threads: int, concurrency: int) -> LoadResult:
    """Read `wrk --latency` output: requests, non-2xx and socket errors, p50 and p99."""
    requests = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if requests is None:
        raise ValueError(f"unreadable wrk output:\n{output}")
    total = int(requests.group(1))
    seconds = _wrk_ms(requests.group(2) + requests.group(3)) / 1000 or duration
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(bad.group(1)) if bad else 0
    # wrk counts a read error when the server closes after an HTTP/1.0 answer: not a failure.
    if socket_errors:
        errors += int(socket_errors.group(1)) + int(socket_errors.group(4))
    p50 = re.search(r"^\s*50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+(\S+)", output, re.MULTILINE)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", output)
    size = 0
    if transfer and total:
        scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[transfer.group(2)]
        size = round(float(transfer.group(1)) * scale * seconds / total)
    return LoadResult(
        tool=f"wrk ({threads} threads, {concurrency} connections)",
        requests=total - (int(bad.group(1)) if bad else 0),
        errors=errors,
        seconds=seconds,
        p50_ms=_wrk_ms(p50.group(1)) if p50 else math.nan,
        p99_ms=_wrk_ms(p99.group(1)) if p99 else math.nan,
        bytes_per_response=size,  # approximate: wrk reports bytes per second, headers included
    )


def wrk_load(
    wrk: str,
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    duration: float,
    concurrency: int,
) -> LoadResult:
    threads = 1  # one event loop drives 8 connections; a second would take a core from the server
    args = [wrk, f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency"]
    for key, value in headers.items():
        args += ["-H", f"{key}: {value}"]
    args.append(f"http://{host}:{port}{path}")
    done = subprocess.run(args, capture_output=True, text=True, check=True, timeout=duration + 60)
    return parse_wrk(done.stdout, duration, threads, concurrency)


def load_tool(prefer: str = "auto") -> str | None:
    """The wrk executable to use, or None for the Python generator."""
    if prefer == "python":
        return None
    found = shutil.which("wrk")
    if prefer == "wrk" and found is None:
        raise SystemExit("--loadgen wrk: wrk is not installed (Debian: apt-get install wrk)")
    return found


def run_in_child(
    url_host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    duration: float,
    concurrency: int,
    wrk: str | None,
) -> LoadResult:
    """Drive the load from another process: the generator never shares a GIL with a server."""
    if wrk is not None:
        return wrk_load(wrk, url_host, port, path, headers, duration, concurrency)
    args = [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        "--host",
        url_host,
        "--port",
        str(port),
        "--path",
        path,
        "--duration",
        str(duration),
        "--concurrency",
        str(concurrency),
        "--headers",
        json.dumps(headers),
    ]
    done = subprocess.run(args, capture_output=True, text=True, check=True, timeout=duration + 60)
    return LoadResult(**json.loads(done.stdout))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/metrics")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--headers", default="{}", help="request headers as a JSON object")
    args = parser.parse_args(argv)
    result = python_load(
        args.host, args.port, args.path, json.loads(args.headers), args.duration, args.concurrency
    )
    sys.stdout.write(json.dumps(asdict(result)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
