"""Shared fixtures: external tools that must exist under CI, child-process log files, and the
suite-wide check that no fragment of a test bearer token appears in any log the suite produced."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Where child-process logs go; set it to keep them after the run (e.g. as CI artifacts).
SUITE_LOG_DIR_ENV = "X_USAGE_EXPORTER_SUITE_LOG_DIR"
FRAGMENT_WIDTH = 8


def require_tool(name: str) -> str:
    """Return the path of an external tool; skip when it is missing, but fail under CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian: see .ci/run)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


# -- the token scan ------------------------------------------------------------------------------
# Every bearer token a test hands to the exporter is registered here. The in-process tests' log
# records are collected by a root handler; child processes write their logs under one session
# directory (suite_log_file). When the session ends, every collected text is searched for every
# 8-character fragment of every registered token, and any hit fails the run. The check runs in
# pytest_sessionfinish rather than in a last test: it then sees every module's logs whatever
# subset, order or -k selection ran, after every fixture (and so every child process) has ended.
# In-process records are scanned as formatted by the stdlib, before the exporter's redaction:
# a token that reaches a log call at all is a finding. A test that must log a token on purpose
# (to test redaction) uses a token it does not register.

_test_tokens: set[str] = set()
_log_dir: Path | None = None


def register_test_token(token: str) -> str:
    """Declare a bearer token the suite uses, so the final scan looks for its fragments."""
    _test_tokens.add(token)
    return token


def token_fragments(token: str, width: int = FRAGMENT_WIDTH) -> set[str]:
    """Every `width`-character piece of the token worth looking for.

    Pieces made of one or two distinct characters (the "AAAA…" prefix of real tokens, the
    "aaaa…" filler of test tokens) are too common to prove a leak, so they are left out.
    """
    pieces = {token[i : i + width] for i in range(max(len(token) - width + 1, 1))}
    return {piece for piece in pieces if len(set(piece)) > 2}


def find_token_fragments(text: str, tokens: set[str]) -> list[str]:
    """The fragments of any of `tokens` that occur in `text`, sorted."""
    return sorted({piece for token in tokens for piece in token_fragments(token) if piece in text})


def suite_log_dir() -> Path:
    """The session's directory for child-process logs, created on first use."""
    global _log_dir  # noqa: PLW0603 - one directory per test session
    if _log_dir is None:
        configured = os.environ.get(SUITE_LOG_DIR_ENV)
        if configured:
            _log_dir = Path(configured)
            _log_dir.mkdir(parents=True, exist_ok=True)
        else:
            _log_dir = Path(tempfile.mkdtemp(prefix="x-usage-exporter-suite-logs-"))
    return _log_dir


def suite_log_file(stem: str) -> Path:
    """A new, uniquely named file in the session log directory for one child's output."""
    handle, name = tempfile.mkstemp(prefix=f"{stem}-", suffix=".log", dir=suite_log_dir())
    os.close(handle)
    return Path(name)


def record_log(stem: str, text: str) -> None:
    """Keep output captured in memory (subprocess.run) for the final scan."""
    suite_log_file(stem).write_text(text, encoding="utf-8")


class _RecordCollector(logging.Handler):
    """Keeps every formatted record (message and traceback) of the in-process tests."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # The event's fields (logs.fields) are scanned too: a token may hide in any of them.
            self.texts.append(f"{self.format(record)} {getattr(record, 'fields', '')}")
        except Exception:  # a record that cannot be formatted must not break the test
            self.texts.append(f"{record.levelname} {record.name} {record.msg!r} {record.args!r}")


_collector = _RecordCollector()


@pytest.fixture(scope="session", autouse=True)
def _collect_in_process_logs() -> Iterator[None]:
    """The exporter's loggers log everything, debug included, into the collector."""
    exporter_logger = logging.getLogger("exporter")
    level = exporter_logger.level
    exporter_logger.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(_collector)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(_collector)
        exporter_logger.setLevel(level)


@pytest.fixture(autouse=True)
def _keep_the_collector_attached(_collect_in_process_logs: None) -> None:
    """A test that replaces the root handlers (logs.setup does) must not blind the scan."""
    root = logging.getLogger()
    if _collector not in root.handlers:
        root.addHandler(_collector)


_leaks: list[str] = []
_scanned: list[int] = []


def pytest_sessionfinish(session: pytest.Session) -> None:
    """After every fixture (and so every child process) is gone: scan, and fail on a leak."""
    logs = sorted(_log_dir.glob("**/*.log")) if _log_dir is not None else []
    for path in logs:
        found = find_token_fragments(
            path.read_text(encoding="utf-8", errors="replace"), _test_tokens
        )
        if found:
            _leaks.append(f"{path}: {', '.join(map(repr, found[:5]))}")
    for text in _collector.texts:
        found = find_token_fragments(text, _test_tokens)
        if found:
            _leaks.append(
                f"in-process log record {text[:160]!r}: {', '.join(map(repr, found[:5]))}"
            )
    _scanned[:] = [len(_collector.texts), len(logs)]
    if _leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif _log_dir is not None and not os.environ.get(SUITE_LOG_DIR_ENV):
        shutil.rmtree(_log_dir, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _scanned:
        return
    records, files = _scanned
    if _leaks:
        terminalreporter.write_sep("=", "a test token leaked into a log", red=True)
        for leak in _leaks[:20]:
            terminalreporter.write_line(leak)
        terminalreporter.write_line(
            f"{len(_leaks)} log(s) hold an 8-character fragment of a registered test token; "
            f"the logs are kept in {_log_dir}"
        )
    else:
        terminalreporter.write_line(
            f"token scan: {len(_test_tokens)} test tokens, {records} in-process log records "
            f"and {files} child-process logs: no fragment found"
        )
