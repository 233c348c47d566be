"""Log lines: each event's context as fields of their own, the same keys in logfmt and JSON,
tokens redacted and control characters escaped whatever field carries them."""

from __future__ import annotations

import ast
import codecs
import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import logs
from exporter.simulator import Fault
from tests.harness import running, sim_project

TOKEN = "token-logs-aaaaaaaaaaaaaaaaaaaaaaa"
LOGFMT_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


@pytest.fixture
def captured() -> Iterator[None]:
    """The root logger's handlers and level as they were before the test's logs.setup()."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:], root.level = handlers, level


def _setup(fmt: str) -> io.StringIO:
    stream = io.StringIO()
    logs.setup("debug", fmt, stream)
    return stream


def parse_line(line: str, fmt: str) -> dict[str, object]:
    if fmt == "json":
        parsed: dict[str, object] = json.loads(line)
        return parsed
    pairs = LOGFMT_PAIR.findall(line)
    assert " ".join(f"{k}={v}" for k, v in pairs) == line, "not logfmt"
    # Quoted values escape as Python's unicode_escape does (\x1b, \r, \", \\).
    return {k: codecs.decode(v[1:-1], "unicode_escape") if v[:1] == '"' else v for k, v in pairs}


def _event(text: str, fmt: str, msg: str) -> dict[str, object]:
    events = [parse_line(line, fmt) for line in text.splitlines()]
    found = [event for event in events if event["msg"] == msg]
    assert found, events
    return found[0]


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_a_rate_limited_poll_logs_its_context_as_fields(
    tmp_path: Path, captured: None, fmt: str
) -> None:
    stream = _setup(fmt)
    with running([sim_project("1001", TOKEN)], tmp_path) as h:
        h.start()
        h.simulator.set_fault(Fault.RATE_LIMIT, reset_after=412)
        h.poll()
    event = _event(stream.getvalue(), fmt, "poll failed")
    assert list(event) == ["ts", "level", "caller", "msg", "project", "reason", "retry_in", "err"]
    assert (event["level"], event["project"], event["reason"]) == ("warn", "p0", "rate_limited")
    retry_in = str(event["retry_in"])
    # The simulator rounds the reset up to a whole second: 412 to 413 s from the request.
    assert retry_in.endswith("s") and 400 <= float(retry_in[:-1]) <= 413, retry_in
    assert "=" not in str(event["msg"])


def test_logfmt_and_json_carry_the_same_keys_and_values(
    captured: None,
) -> None:
    record = logging.LogRecord("exporter.x", logging.INFO, "x.py", 7, "listening", None, None)
    record.fields = {"address": ":9879", "port": 9879, "demo": True, "poll_interval": "30s"}
    as_logfmt = parse_line(logs.LogfmtFormatter().format(record), "logfmt")
    as_json = parse_line(logs.JsonFormatter().format(record), "json")
    assert list(as_logfmt) == list(as_json)
    assert as_json["port"] == 9879 and as_json["demo"] is True
    assert (as_logfmt["port"], as_logfmt["demo"]) == ("9879", "true")
    assert as_logfmt["address"] == as_json["address"] == ":9879"


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_fields_are_redacted_and_escaped(captured: None, fmt: str) -> None:
    secret = "unregistered-secret-zq81x7"  # on purpose in a log call: not a suite test token
    logs.register_secret(secret)
    stream = _setup(fmt)
    logging.getLogger("exporter.test").warning(
        "poll failed", extra=logs.fields(err=f"Bearer {secret}\x1b[31m\r\nfake=line", user=None)
    )
    line = stream.getvalue()
    assert line.count("\n") == 1 and "\r" not in line and "\x1b" not in line
    event = parse_line(line.strip(), fmt)
    assert secret not in line and event["err"] == f"Bearer {logs.REDACTED}\x1b[31m\r\nfake=line"
    assert "user" not in event and "fake" not in event


def test_an_event_cannot_replace_the_records_own_fields(
    captured: None,
) -> None:
    stream = _setup("logfmt")
    logging.getLogger("exporter.test").info("listening", extra=logs.fields(msg="x", level="y"))
    event = parse_line(stream.getvalue().strip(), "logfmt")
    assert (event["msg"], event["level"]) == ("listening", "info")


def _logged_events() -> dict[str, set[str]]:
    """Every log call in exporter/: its event name and the keys of its logs.fields()."""
    events: dict[str, set[str]] = {}
    for source in Path(logs.__file__).parent.glob("*.py"):
        tree = ast.parse(source.read_text())
        for call in ast.walk(tree):
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and isinstance(call.func.value, ast.Name)
                and call.func.value.id == "log"
            ):
                continue
            name = call.args[0]
            assert isinstance(name, ast.Constant) and isinstance(name.value, str), source
            assert name.value == name.value.lower() and "=" not in name.value, name.value
            keys = {
                keyword.arg
                for extra in call.keywords
                if extra.arg == "extra" and isinstance(extra.value, ast.Call)
                for keyword in extra.value.keywords
                if keyword.arg
            }
            if call.func.attr == "exception":
                keys.add("err")  # the formatter's, from the exception
            events.setdefault(name.value, set()).update(keys)
    return events


def test_every_event_and_key_is_in_docs_logging() -> None:
    doc = (Path(logs.__file__).parent.parent / "docs" / "logging.md").read_text()
    events_part, keys_part = doc.split("## Events")[1].split("## Keys")
    keys_part = keys_part.split("\n## ")[0]
    row = r"^\| `([a-z ]+)` \| (?:debug|info|warn|error) \|([^|]*)\|"
    documented = {
        name: set(re.findall(r"`(\w+)`", cell)) for name, cell in re.findall(row, events_part, re.M)
    }
    keys_documented = {
        key
        for cell in re.findall(r"^\| ([^|]+) \|", keys_part, re.M)
        for key in re.findall(r"`(\w+)`", cell)
    }
    logged = _logged_events()
    assert logged.keys() == documented.keys()
    for event, keys in logged.items():
        assert keys == documented[event], event
        assert keys <= keys_documented, event


def test_redaction_while_another_thread_registers_tokens_never_fails() -> None:
    """redact() walked the token set while a poll added to it: `RuntimeError: Set changed size
    during iteration` inside a log call (review, 2026-11-30)."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def register() -> None:
        for k in range(20_000):
            if stop.is_set():
                return
            logs.register_secret(f"token-race-{k:012d}")

    def redact() -> None:
        try:
            for _ in range(300):
                assert logs.redact("token-race-000000000001 said hi").endswith(" said hi")
        except BaseException as exc:  # the test reports whatever it was
            failures.append(exc)

    writer = threading.Thread(target=register)
    readers = [threading.Thread(target=redact) for _ in range(2)]
    writer.start()
    try:
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
    finally:
        stop.set()
        writer.join()
        with logs._secrets_lock:  # the race's tokens would slow every later redaction
            logs._secrets.difference_update(
                {s for s in logs._secrets if s.startswith("token-race-")}
            )
    assert failures == []
