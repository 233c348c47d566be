"""Real Prometheus and Alertmanager processes on loopback, for end-to-end tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from exporter.alert_eval import free_port
from tests.conftest import require_tool, suite_log_file


class Server:
    """A child process with an HTTP readiness endpoint; its output goes to a log file."""

    def __init__(self, args: list[str], url: str, log: Path) -> None:
        self.url = url
        self.log = log
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(args, stdout=self._log_file, stderr=subprocess.STDOUT)

    def wait_ready(self, path: str = "/-/ready", timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> int:
        """SIGTERM and the exit code; killed (a negative code) if it does not end in 20 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


class Exporter(Server):
    """`python -m exporter` on a free loopback port; its log goes to the suite's log directory,
    which the session's final token scan reads."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        listen = f"--web.listen-address=127.0.0.1:{self.port}"
        super().__init__(
            [sys.executable, "-m", "exporter", listen, *args],
            f"http://127.0.0.1:{self.port}",
            suite_log_file(f"exporter-{self.port}"),
        )

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text


class Prometheus(Server):
    def __init__(self, tmp: Path, config: str, storage: Path | None = None) -> None:
        binary = require_tool("prometheus")
        config_file = tmp / "prometheus.yml"
        config_file.write_text(config)
        port = free_port()
        super().__init__(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={storage or tmp / 'prometheus-data'}",
                "--storage.tsdb.retention.time=10y",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            f"http://127.0.0.1:{port}",
            tmp / "prometheus.log",
        )
        self.wait_ready("/-/ready")

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, str | float] = {"query": expr}
        if at is not None:
            params["time"] = at
        answer = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()
        alerts: list[dict[str, Any]] = answer["data"]["alerts"]
        return alerts


class Alertmanager(Server):
    def __init__(self, tmp: Path, config: str) -> None:
        binary = require_tool("prometheus-alertmanager")
        config_file = tmp / "alertmanager.yml"
        config_file.write_text(config)
        port, cluster = free_port(), free_port()
        super().__init__(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.path={tmp / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--cluster.listen-address=127.0.0.1:{cluster}",
                "--cluster.advertise-address=127.0.0.1:0",
                "--log.level=warn",
            ],
            f"http://127.0.0.1:{port}",
            tmp / "alertmanager.log",
        )
        self.wait_ready("/-/ready")
