"""Structured logs: one rendering for every stdlib logger (ours, hypercorn's), context bound
with contextvars.

The code logs through ``logging.getLogger(__name__)`` everywhere; ``configure`` puts a
structlog ``ProcessorFormatter`` on the root handler, so each record leaves as one JSON object
(``json``) or one ``time LEVEL logger event key=value ...`` line (``text``), with the context
of the task that logged it:

- ``request_id``: every HTTP request (``http/asgi.py``; echoed as ``X-Request-Id``);
- ``user_id``: once a request is authenticated (``http/common.py``), or a stream admitted;
- ``connection_id``: a realtime connection (``realtime/listener.py``);
- ``chat_id``: inside a ChatActor's task (``actors/directory.py``);
- ``node_id``: reserved for the cluster; ``configure(node_id=...)`` stamps it on every line.

Context lives in contextvars, which trio copies into every task it starts, so a value bound in
a task is seen by the tasks it spawns and by the threads it runs work on, never by its parent
or siblings. A long-lived task started on behalf of a request calls ``enter_task`` so that it
does not carry that request's context for its whole life.

This module must never see a secret: nothing logs a token, a password or message text. The
``redact`` processor is a safety net behind that rule, not a licence: values under sensitive
keys, JWTs, ``Bearer`` credentials, ``token=``/``password=`` pairs and pydantic's
``input_value=`` echoes are replaced by ``[redacted]`` in every line, tracebacks included.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["json", "text"]
LOG_FORMATS = ("auto", "json", "text")
REDACTED = "[redacted]"

# Key names (lower case) whose values are never rendered, and substrings that mark one.
_SENSITIVE_KEYS = frozenset({"content", "text", "body", "authorization", "cookie"})
_SENSITIVE_PARTS = ("password", "token", "secret")
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A JWT: three base64url segments, the first an encoded JSON object ("eyJ").
    (re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*"), REDACTED),
    (re.compile(r"(?i)\b(bearer)\s+\S+"), rf"\1 {REDACTED}"),
    # token=..., "password": "...", access_token: ... (query strings, JSON, reprs).
    (
        re.compile(
            r"(?i)([\w-]*(?:token|password|secret)[\w-]*[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;}]+"
        ),
        rf"\1{REDACTED}",
    ),
    # pydantic's ValidationError echoes the rejected input (a password, a message text).
    (
        re.compile(r"input_value=(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^,\]\s]+)"),
        f"input_value={REDACTED}",
    ),
)


class Deferred:
    """A context value read when a line is logged (a connection's user, known only later).

    ``get`` returns the value, or None to leave the key out of the line.
    """

    __slots__ = ("get",)

    def __init__(self, get: Callable[[], object]) -> None:
        self.get = get


def redact_text(text: str) -> str:
    """``text`` with every recognisable secret replaced by ``[redacted]``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _sensitive(key: str) -> bool:
    lowered = key.lower()
    return lowered in _SENSITIVE_KEYS or any(part in lowered for part in _SENSITIVE_PARTS)


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the safety net described in the module docstring."""
    for key, value in event.items():
        if key.startswith("_"):
            continue  # structlog's own bookkeeping (the stdlib record), never rendered
        if _sensitive(key):
            event[key] = REDACTED
        elif isinstance(value, str):
            event[key] = redact_text(value)
    return event


def _resolve_deferred(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if isinstance(value, Deferred):
            resolved = value.get()
            if resolved is None:
                del event[key]
            else:
                event[key] = resolved
    return event


def _static(values: dict[str, object]) -> structlog.types.Processor:
    def add(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in values.items():
            event.setdefault(key, value)
        return event

    return add


# The fields every line starts with, in this order; the context follows.
_HEAD = ("timestamp", "level", "logger", "event")


def _head_first(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ordered = {key: event.pop(key) for key in _HEAD if key in event}
    ordered.update(event)
    return ordered


def render_text(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """``2026-01-02T03:04:05.678Z INFO fechatter.app fechatter API on ... request_id=...``.

    The level is upper case, as the plain stdlib format had it; a traceback follows on the
    next lines.
    """
    exception = event.pop("exception", None)
    parts = [
        str(event.pop("timestamp", "")),
        str(event.pop("level", "")).upper(),
        str(event.pop("logger", "")),
        str(event.pop("event", "")),
    ]
    parts.extend(f"{key}={value}" for key, value in event.items())
    line = " ".join(p for p in parts if p)
    return f"{line}\n{exception}" if exception else line


def resolve_format(log_format: str, stream: TextIO) -> LogFormat:
    """``json`` or ``text``; ``auto`` is text on a terminal, json otherwise."""
    if log_format == "auto":
        isatty = getattr(stream, "isatty", None)
        return "text" if isatty is not None and isatty() else "json"
    if log_format not in ("json", "text"):
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}: {log_format!r}")
    return "json" if log_format == "json" else "text"


def formatter(log_format: LogFormat, *, node_id: str | None = None) -> logging.Formatter:
    """A stdlib formatter rendering any record in ``log_format`` with its bound context."""
    chain: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        _resolve_deferred,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if node_id is not None:
        chain.append(_static({"node_id": node_id}))
    chain += [structlog.processors.format_exc_info, redact]
    render: list[structlog.types.Processor] = (
        [_head_first, structlog.processors.JSONRenderer()]
        if log_format == "json"
        else [render_text]
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
    )


def configure(
    log_format: str = "auto",
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
    node_id: str | None = None,
) -> LogFormat:
    """Route every stdlib record to ``stream`` (stderr) in ``log_format``; returns the format.

    Replaces the root logger's handlers (the process's one log configuration: the CLI calls
    it once). Raises ``ValueError`` for an unknown format.
    """
    out = stream if stream is not None else sys.stderr
    chosen = resolve_format(log_format, out)
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter(chosen, node_id=node_id))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # python_multipart logs a WARNING per malformed upload body: a client could flood the
    # log with them; the upload route answers those with a 400 problem of its own.
    logging.getLogger("python_multipart").setLevel(max(level, logging.ERROR))
    return chosen


# -- context ----------------------------------------------------------------------------------
def bind(**values: object) -> None:
    """Bind ``values`` to every line the current task (and the tasks it starts) logs."""
    structlog.contextvars.bind_contextvars(**values)


@contextmanager
def bound(**values: object) -> Iterator[None]:
    """``bind`` for the duration of the block, then restore what was bound before."""
    with structlog.contextvars.bound_contextvars(**values):
        yield


def enter_task(**values: object) -> None:
    """Start a long-lived task's context afresh with ``values`` (drop the spawner's)."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**values)


def current() -> dict[str, Any]:
    """The context bound in the current task (a copy)."""
    return structlog.contextvars.get_contextvars()
