"""A clean server log is part of passing: what counts as a problem in a server's log.

In-process servers log through :mod:`logging`; ``LogWatch`` (installed on the root logger by
the autouse fixture in ``tests/conftest.py``) keeps every record at ERROR or above and every
record that carries a traceback. Subprocess servers write the CLI's log format to stderr
(``fechatter.logs``: JSON lines when stderr is not a terminal, text lines otherwise);
``problems_in_text`` finds the same things there. A test that provokes an error on purpose
says so with ``@pytest.mark.expect_log_errors("regex", ..., reason="...")``: a problem whose
text matches one of the patterns (``re.search``) is expected, any other fails the test.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Sequence

# `fechatter serve --log-format text` logs "time LEVEL logger event key=value..." (formerly
# "%(asctime)s %(levelname)s %(name)s %(message)s"); hypercorn's own handler logs
# "[...] [ERROR] message". JSON lines carry "level" and, with a traceback, "exception".
_ERROR_LINE = re.compile(r"(?:^|\s)(?:ERROR|CRITICAL|\[ERROR\]|\[CRITICAL\])\s")


def _matches(text: str, expected: Sequence[str]) -> bool:
    return any(re.search(pattern, text) for pattern in expected)


class LogWatch(logging.Handler):
    """Collects the records that make a server log unclean (thread-safe: storage threads log).

    ``problems`` are formatted as ``"LEVEL logger: message"`` followed by the traceback, if
    any, so patterns can match the logger, the message or the exception type.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self._lock_list = threading.Lock()
        self._records: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR and not record.exc_info:
            return
        try:
            text = self.format(record)
        except Exception:  # a broken log call is itself a problem worth seeing
            text = f"{record.levelname} {record.name}: unformattable {record.msg!r}"
        with self._lock_list:
            self._records.append(text)

    def take(self) -> list[str]:
        """Every problem recorded since the last ``take``, oldest first."""
        with self._lock_list:
            taken, self._records = self._records, []
        return taken

    def take_unexpected(self, expected: Sequence[str] = ()) -> list[str]:
        """``take``, minus the problems matching one of the ``expected`` patterns."""
        return [text for text in self.take() if not _matches(text, expected)]


def problems_in_text(log: str, expected: Sequence[str] = ()) -> list[str]:
    """The lines of a subprocess server's stderr that make its log unclean.

    A problem is a line at ERROR/CRITICAL level, or a ``Traceback`` together with the lines
    of the traceback up to its exception line. Problems matching ``expected`` are dropped.
    """
    problems: list[str] = []
    lines = log.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        record = _json_record(line)
        if record is not None:
            if record.get("level") in ("error", "critical") or record.get("exception"):
                problems.append(f"{line}\n{record.get('exception', '')}".rstrip())
            i += 1
            continue
        if line.startswith("Traceback") or "Traceback (most recent call last)" in line:
            block = [line]
            i += 1
            while i < len(lines) and (lines[i].startswith((" ", "\t")) or not lines[i]):
                block.append(lines[i])
                i += 1
            if i < len(lines):
                block.append(lines[i])  # the exception line
                i += 1
            problems.append("\n".join(block))
            continue
        if _ERROR_LINE.search(line):
            problems.append(line)
        i += 1
    return [p for p in problems if not _matches(p, expected)]


def _json_record(line: str) -> dict[str, object] | None:
    """The record of a JSON log line (an object with ``level`` and ``event``), else None."""
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if isinstance(record, dict) and "level" in record and "event" in record:
        return record
    return None


def expected_patterns(markers: Iterable[object]) -> list[str]:
    """The patterns of every ``expect_log_errors`` marker given (``pytest.Mark`` objects)."""
    patterns: list[str] = []
    for mark in markers:
        args = getattr(mark, "args", ())
        if not args:
            raise ValueError("expect_log_errors needs at least one pattern")
        patterns.extend(str(a) for a in args)
    return patterns
