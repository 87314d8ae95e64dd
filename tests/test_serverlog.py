"""The clean-log check itself (tests/serverlog.py): what it counts as a problem."""

from __future__ import annotations

import json
import logging

import pytest

from tests.serverlog import LogWatch, problems_in_text

CLI_LOG = """\
2026-11-30 10:00:00,000 INFO fechatter fechatter API on http://127.0.0.1:1 (open-files limit 1)
2026-11-30 10:00:01,000 WARNING fechatter.app slow start
2026-11-30 10:00:02,000 ERROR fechatter.http unhandled error on GET /x
Traceback (most recent call last):
  File "x.py", line 1, in f
    boom()
ValueError: boom
[2026-11-30 10:00:03 +0000] [1] [ERROR] Exception in ASGI application
2026-11-30 10:00:04,000 INFO fechatter signal SIGINT: shutting down gracefully
"""


def test_subprocess_log_problems_are_error_lines_and_tracebacks() -> None:
    problems = problems_in_text(CLI_LOG)
    assert len(problems) == 3
    assert "unhandled error on GET /x" in problems[0]
    assert problems[1].startswith("Traceback")
    assert problems[1].endswith("ValueError: boom")
    assert "[ERROR] Exception in ASGI application" in problems[2]
    assert problems_in_text(CLI_LOG, ["unhandled error", "ValueError: boom", "ASGI"]) == []
    assert problems_in_text(CLI_LOG.replace("ERROR", "INFO").split("Traceback")[0]) == []


def test_in_process_records_at_error_or_with_a_traceback_are_problems(
    server_log: LogWatch,
) -> None:
    log = logging.getLogger("fechatter.test")
    log.info("fine")
    log.warning("also fine")
    try:
        raise KeyError("k")
    except KeyError:
        log.warning("handled, but with a traceback", exc_info=True)
    log.error("an error")
    problems = server_log.take()  # taken: this test's teardown sees a clean log
    assert len(problems) == 2
    assert "KeyError" in problems[0]
    assert problems[1] == "ERROR fechatter.test: an error"
    assert server_log.take() == []


@pytest.mark.expect_log_errors(r"expected: \d+", reason="this test checks the marker")
def test_marked_errors_are_expected() -> None:
    logging.getLogger("fechatter.test").error("expected: %d", 42)


def test_watch_filters_expected_patterns() -> None:
    watch = LogWatch()
    log = logging.getLogger("fechatter.test.filter")
    log.addHandler(watch)
    log.propagate = False
    try:
        log.error("known problem")
        log.error("new problem")
    finally:
        log.removeHandler(watch)
        log.propagate = True
    assert watch.take_unexpected(["known"]) == ["ERROR fechatter.test.filter: new problem"]


def test_json_log_problems_are_error_records_and_tracebacks() -> None:
    """The CLI's default log when stderr is not a terminal: one JSON object per line."""
    lines = [
        {"event": "fechatter API on http://x", "level": "info", "logger": "fechatter.app"},
        {"event": "slow", "level": "warning", "logger": "fechatter.app"},
        {"event": "unhandled error on GET /x", "level": "error", "request_id": "r1"},
        {
            "event": "handled",
            "level": "warning",
            "exception": 'Traceback (most recent call last):\n  File "x.py"\nKeyError: k',
        },
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\nnot json {\n"
    problems = problems_in_text(text)
    assert len(problems) == 2
    assert "unhandled error on GET /x" in problems[0]
    assert problems[1].endswith("KeyError: k")
    assert problems_in_text(text, ["unhandled error", "KeyError"]) == []
