"""A real page: simulator -> exporter -> Prometheus (alerts/) -> Alertmanager -> webhook.

Prometheus loads alerts/ unchanged except for time: every `for:` is divided by 60 (5m becomes 5s)
so that the test runs in a minute. The expressions, labels, annotations and thresholds are the
shipped ones, and so is the Alertmanager route (alerts/alertmanager.example.yml) with its
receivers pointed at a webhook that this test runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.alert_eval import free_port
from exporter.config import format_duration, parse_duration
from exporter.simulator import Simulator
from tests.harness import sim_project
from tests.servers import Alertmanager, Exporter, Prometheus, Server

ROOT = Path(__file__).resolve().parent.parent
TIME_SCALE = 60
TOKEN = "token-e2e-alerting-aaaaaaaaaaaa"
pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Notification:
    receiver: str  # the path the webhook was called on: /pager or /chat
    received: float
    alert: dict[str, Any]


class Webhook:
    """Collects Alertmanager's webhook notifications, one entry per alert."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with webhook._lock:
                    for alert in body["alerts"]:
                        webhook.notifications.append(Notification(self.path, time.time(), alert))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def find(self, receiver: str, alertname: str, **labels: str) -> list[Notification]:
        with self._lock:
            return [
                n
                for n in self.notifications
                if n.receiver == receiver
                and n.alert["status"] == "firing"
                and n.alert["labels"]["alertname"] == alertname
                and all(n.alert["labels"].get(k) == v for k, v in labels.items())
            ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _time_compressed_rules(tmp: Path) -> list[Path]:
    rules = yaml.safe_load((ROOT / "alerts" / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                seconds = parse_duration(rule["for"]) / TIME_SCALE
                rule["for"] = format_duration(seconds)
    compressed = tmp / "rules.yml"
    compressed.write_text(yaml.safe_dump(rules, sort_keys=False))
    return [ROOT / "alerts" / "thresholds.yml", compressed]


def _alertmanager_config(webhook: Webhook) -> str:
    config = yaml.safe_load((ROOT / "alerts" / "alertmanager.example.yml").read_text())
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = f"{webhook.url}/{receiver['name']}"
    config["route"].update(group_wait="1s", group_interval="1s")
    return yaml.safe_dump(config)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Simulator, Webhook, Prometheus]]:
    now = datetime.now(UTC)
    # Twelve days into the cycle at about 45% of the cap: healthy, no alert.
    project = sim_project(
        "1001",
        TOKEN,
        cap=2_000_000,
        cap_reset_day=min((now - timedelta(days=12)).day, 28),
        mean_daily=60_000.0,
        origin=now.date(),
        credits=None,
    )
    simulator = Simulator([project])
    simulator.start()
    webhook = Webhook()
    (tmp_path / "token").write_text(TOKEN)
    config = tmp_path / "config.yml"
    config.write_text(
        f"api_base_url: {simulator.url}\npoll_interval: 2s\ncredits: 'off'\n"
        "projects: [{name: production, bearer_token_file: token}]\n"
    )
    servers: list[Server] = []
    try:
        target = Exporter("--config.file", str(config))
        servers.append(target)
        target.wait_ready()
        alertmanager = Alertmanager(tmp_path, _alertmanager_config(webhook))
        servers.append(alertmanager)
        rule_files = "".join(f"  - {path}\n" for path in _time_compressed_rules(tmp_path))
        prometheus = Prometheus(
            tmp_path,
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files:\n{rule_files}"
            "alerting:\n  alertmanagers:\n"
            f"    - static_configs: [{{targets: ['{alertmanager.url.removeprefix('http://')}']}}]\n"
            "scrape_configs:\n  - job_name: x-usage-exporter\n"
            f"    static_configs: [{{targets: ['{target.url.removeprefix('http://')}']}}]\n",
        )
        servers.append(prometheus)
        yield simulator, webhook, prometheus
    finally:
        for server in reversed(servers):
            server.stop()
        webhook.stop()
        simulator.stop()


def _wait(check: Callable[[], bool], timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.time()
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_project_past_95_percent_pages_and_a_broken_token_alerts(
    stack: tuple[Simulator, Webhook, Prometheus],
) -> None:
    simulator, webhook, prometheus = stack
    _wait(
        lambda: bool(prometheus.query('xapi_project_cap_utilization_ratio{project="production"}')),
        30,
        "the first scrape",
    )
    ratio = float(prometheus.query("xapi_project_cap_utilization_ratio")[0]["value"][1])
    assert 0.2 < ratio < 0.8, ratio
    time.sleep(3)
    assert webhook.notifications == [], "a healthy project must not notify"

    pushed = time.time()
    simulator.project("1001").fill_to_ratio(datetime.now(UTC), 0.96)
    paged = _wait(
        lambda: bool(webhook.find("/pager", "XApiPostCapUsageHigh", severity="critical")),
        60,
        "the critical cap page",
    )
    (page,) = webhook.find("/pager", "XApiPostCapUsageHigh", severity="critical")
    assert page.alert["labels"]["project"] == "production"
    assert "96" in page.alert["annotations"]["description"]
    assert page.alert["annotations"]["runbook_url"].endswith("#xapipostcapusagehigh")

    project = simulator.project("1001")
    del simulator.projects[project.token]  # the X API no longer knows the token: 401
    broken = time.time()
    alerted = _wait(
        lambda: bool(webhook.find("/chat", "XApiUpstreamAuthFailure", project="production")),
        60,
        "the auth failure alert",
    )
    # The warning of the cap alert stayed inhibited by its critical the whole time.
    assert webhook.find("/chat", "XApiPostCapUsageHigh") == []

    cap_latency, auth_latency = paged - pushed, alerted - broken
    print(
        f"\ndetection latency (for: divided by {TIME_SCALE}, poll 2s, scrape and evaluation 1s, "
        f"group_wait 1s): cap critical {cap_latency:.1f}s, auth failure {auth_latency:.1f}s"
    )
    # Not a timing assertion on speed: the notifications came, and after their for: elapsed.
    assert cap_latency >= 5 and auth_latency >= 10
