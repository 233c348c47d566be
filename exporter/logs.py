"""Logging setup: logfmt or JSON lines on stderr, with every known bearer token redacted."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import TextIO

from exporter.errors import describe

LEVELS = ("debug", "info", "warn", "error")
FORMATS = ("logfmt", "json")
REDACTED = "<redacted>"

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(secret: str) -> None:
    """Remember a token so that no log line can carry it, whatever code path formats it."""
    if len(secret) >= 4:
        with _secrets_lock:
            _secrets.add(secret)


def fields(**values: object) -> dict[str, object]:
    """`extra=` of a log call: the event's context, written as fields of their own
    (`log.warning("poll failed", extra=logs.fields(project="production", reason="timeout"))`);
    a None value is left out. The keys are listed in docs/logging.md."""
    return {"fields": {key: value for key, value in values.items() if value is not None}}


def seconds(value: float) -> str:
    """A duration as a field value: `412s`, `0.25s`."""
    return f"{round(value, 3):g}s"


def redact(text: str) -> str:
    with _secrets_lock:  # a poll may register a token while another thread logs
        secrets = tuple(_secrets)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


Value = str | int | float | bool


def _record_fields(record: logging.LogRecord) -> dict[str, Value]:
    """The record as ordered fields: ts, level, caller, msg, then the event's own fields, then
    err for an exception."""
    out: dict[str, Value] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower().replace("warning", "warn"),
        "caller": f"{record.module}:{record.lineno}",
        "msg": redact(record.getMessage()),
    }
    extra = getattr(record, "fields", None)
    for key, value in extra.items() if isinstance(extra, dict) else ():
        if key not in out:  # the four above are the record's own: an event cannot replace them
            out[key] = _field_value(value)
    if record.exc_info and record.exc_info[1] is not None:
        # One line saying what happened, never a multi-line traceback or a class name.
        out["err"] = redact(describe(record.exc_info[1]))
    return out


def _field_value(value: object) -> Value:
    if isinstance(value, bool | int | float):
        return value
    return redact(str(value))


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _record_fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_record_fields(record), ensure_ascii=False)


def _logfmt_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value and value.isprintable() and not any(c in value for c in ' ="\\'):
        return value
    # Control characters (a client's or an upstream's text) are escaped, never written raw.
    escaped = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
        for c in value.replace("\\", "\\\\").replace('"', '\\"')
    )
    return f'"{escaped}"'


def setup(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Configure the root logger once at start; `level` and `fmt` were validated by the CLI."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if level == "warn" else level.upper())
    # httpx logs every request at info; its debug output would include connection details.
    for noisy in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
