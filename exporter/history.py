"""--history.file: the days each project has used, kept across restarts for the year-ago forecast.

The endpoint answers with 90 days at most; the forecast's step 8 reads a year and more
(docs/forecasting.md). The exporter keeps what it has seen in memory (ProjectState.kept) and, with
this flag, in one JSON file, written whole to a temporary file and renamed over the old one, so
that a crash leaves the old file or the new one, never half of one. Nothing in it is secret: it
holds per project the X project id and Posts per UTC day.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

from exporter import logs
from exporter.config import MAX_PROJECT_NAME_CHARS, MAX_PROJECTS, read_small_file
from exporter.errors import describe
from exporter.forecast import KEEP_DAYS
from exporter.snapshot import HistoryStatus, KeptDays, ProjectState, Store

log = logging.getLogger(__name__)

VERSION = 1
# 1,000 projects x KEEP_DAYS days of up to 16 digits and a comma: about 7.6 MB.
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_POSTS_PER_DAY = 10**15  # far beyond any cap; a larger count is a damaged file, not usage
MAX_ID_CHARS = 64  # the longest project id seen is 22 digits


class HistoryFileError(ValueError):
    """The history file cannot be used; the message names the file and what is wrong."""


def load(path: Path) -> dict[str, KeptDays]:
    """The kept days per project name. A missing file is an empty history (the first start);
    anything else that cannot be read whole raises HistoryFileError."""
    try:
        text = read_small_file(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise HistoryFileError(f"{path}: {describe(exc)}") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting no history file has
        raise HistoryFileError(f"{path}: not JSON ({describe(exc)})") from None
    try:
        return _projects(data)
    except ValueError as exc:
        raise HistoryFileError(f"{path}: {exc}") from None


def _projects(data: object) -> dict[str, KeptDays]:
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError(f"not a version {VERSION} history file")
    projects = data.get("projects")
    if not isinstance(projects, dict):
        raise ValueError("projects: expected an object")
    if len(projects) > MAX_PROJECTS:
        raise ValueError(f"projects: more than {MAX_PROJECTS}")
    kept: dict[str, KeptDays] = {}
    for name, entry in projects.items():
        where = f"projects.{json.dumps(name)[:140]}"
        if len(name) > MAX_PROJECT_NAME_CHARS:
            raise ValueError(f"{where[:60]}...: a name longer than {MAX_PROJECT_NAME_CHARS}")
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object")
        project_id = entry.get("project_id")
        if not isinstance(project_id, str) or not 0 < len(project_id) <= MAX_ID_CHARS:
            raise ValueError(f"{where}.project_id: expected an id")
        first_day = entry.get("first_day")
        try:
            first = date.fromisoformat(first_day if isinstance(first_day, str) else "")
        except ValueError:
            raise ValueError(f"{where}.first_day: expected YYYY-MM-DD") from None
        posts = entry.get("posts")
        if not isinstance(posts, list) or len(posts) > KEEP_DAYS:
            raise ValueError(f"{where}.posts: expected a list of at most {KEEP_DAYS} days")
        days: dict[date, int] = {}
        for k, value in enumerate(posts):
            if value is None:
                continue
            if type(value) is not int or not 0 <= value <= MAX_POSTS_PER_DAY:
                raise ValueError(f"{where}.posts[{k}]: expected a count of Posts or null")
            days[first + timedelta(days=k)] = value
        kept[name] = KeptDays.of(project_id, days)
    return kept


def dumps(entries: Mapping[str, KeptDays]) -> str:
    """The history file's text for the projects' kept days."""
    projects = {
        name: {
            "project_id": kept.project_id,
            "first_day": kept.first.isoformat(),
            "posts": [n if n >= 0 else None for n in kept.posts],
        }
        for name, kept in sorted(entries.items())
        if kept.first is not None
    }
    return json.dumps({"version": VERSION, "projects": projects}, separators=(",", ":"))


def merged(
    entries: Mapping[str, KeptDays], states: Mapping[str, ProjectState], today: date
) -> dict[str, KeptDays]:
    """What the file should hold (pure): each configured project's kept days, and the entries of
    projects not configured now (a project left out of the config for a while, or until a reload
    adds it back, keeps its days) unless their newest day is older than KEEP_DAYS. At most
    MAX_PROJECTS entries, the configured ones first, so that the file always loads."""
    oldest = today - timedelta(days=KEEP_DAYS)
    configured = {n: s.kept for n, s in states.items() if s.kept is not None}
    others = [
        (newest, name, kept)
        for name, kept in entries.items()
        if name not in states and (newest := _newest(kept)) is not None and newest >= oldest
    ]
    others.sort(reverse=True)
    room = max(MAX_PROJECTS - len(configured), 0)
    return configured | {name: kept for _, name, kept in others[:room]}


def _newest(kept: KeptDays) -> date | None:
    return None if kept.first is None else kept.first + timedelta(days=len(kept.posts) - 1)


def write(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (a temporary file in its directory, renamed).
    OSError when it cannot; the old file is then untouched."""
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, renamed or removed
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    )
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class HistoryFile:
    """Loads the file once at start and writes it whenever what it should hold changed; says how
    both went in the store (the xapi_exporter_history_file_* metrics)."""

    def __init__(self, path: Path, store: Store) -> None:
        self.path = path
        self._store = store
        self._status = HistoryStatus(loaded_ok=True, write_ok=None, last_write=None)
        self._entries: dict[str, KeptDays] = {}  # as last written (or loaded)
        self._lock = threading.Lock()  # the writer thread and the last write at a clean stop
        store.set_history_status(self._status)

    def _set(self, status: HistoryStatus) -> None:
        self._status = status
        self._store.set_history_status(status)

    def kept_for(self, name: str) -> KeptDays | None:
        """The days kept for a project when it is configured (at start, or by a reload)."""
        with self._lock:
            return self._entries.get(name)

    def load(self) -> None:
        """Read the days of the last run. A file that cannot be used is renamed aside (kept for a
        human to look at, never overwritten) and the history starts empty: a damaged file must
        not stop the exporter, which only loses the year-ago forecast until it has seen a year."""
        try:
            entries = load(self.path)
        except HistoryFileError as exc:
            self._set(replace(self._status, loaded_ok=False))
            aside = self.path.with_name(self.path.name + ".unreadable")
            try:
                os.replace(self.path, aside)
            except OSError as move:
                aside = Path(f"(not moved: {describe(move)})")
            log.error(
                "history file unreadable",
                extra=logs.fields(err=str(exc), moved_to=str(aside), kept="nothing"),
            )
            return
        with self._lock:
            self._entries = entries
        log.info("history loaded", extra=logs.fields(file=str(self.path), projects=len(entries)))

    def save(self, now: datetime) -> None:
        """Write the file if what it should hold changed since the last write that worked."""
        with self._lock:
            self._save(now)

    def _save(self, now: datetime) -> None:
        entries = merged(self._entries, self._store.states, now.date())
        failed_before = self._status.write_ok is False
        if self._status.write_ok and _same(entries, self._entries):
            return
        try:
            write(self.path, dumps(entries))
        except OSError as exc:
            if not failed_before:
                log.error(
                    "history file not written",
                    extra=logs.fields(file=str(self.path), err=describe(exc)),
                )
            self._set(replace(self._status, write_ok=False))
            return
        if failed_before:
            log.info("history file written again", extra=logs.fields(file=str(self.path)))
        self._set(replace(self._status, write_ok=True, last_write=now.timestamp()))
        self._entries = entries


def _same(a: Mapping[str, KeptDays], b: Mapping[str, KeptDays]) -> bool:
    """The same projects with the same kept-days objects (keep_days returns the old object when
    nothing changed, so identity is enough)."""
    return a.keys() == b.keys() and all(a[name] is b[name] for name in a)
