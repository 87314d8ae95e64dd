"""Validation of every realtime event and frame the tests receive, against the shipped schemas.

The stream clients (``tests/realtime/clients.py``, ``tests/deploy/nginx.py``) and the tests that
read WebSocket frames through trio-websocket call ``check_event`` / ``check_ws_frame`` on
everything they receive, so a payload that drifts from ``fechatter/realtime/schemas`` (and so
from docs/api.md) fails the test that saw it, naming the event, the path and the schema rule.
The validators are compiled once per test process.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.protocols import Validator
from referencing import Registry, Resource

from fechatter.realtime import schemas


class SchemaMismatch(AssertionError):
    """A received event or frame does not match its schema (fails the test)."""


@cache
def _validators() -> dict[str, Validator]:
    """One compiled validator per schema file, keyed by path (``"events/typing.json"``)."""
    loaded = schemas.load()
    registry: Registry[Any] = Registry().with_resources(
        (schemas.BASE + path, Resource.from_contents(doc)) for path, doc in loaded.items()
    )
    out: dict[str, Validator] = {}
    for path, doc in loaded.items():
        Draft202012Validator.check_schema(doc)
        out[path] = Draft202012Validator(doc, registry=registry)
    return out


def _check(path: str, value: Any, what: str) -> None:
    validator = _validators().get(path)
    if validator is None:
        raise SchemaMismatch(f"{what}: no schema {path} in fechatter/realtime/schemas")
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [
            f"  at {'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
            for e in errors[:5]
        ]
        raise SchemaMismatch(
            f"{what} does not match {path}:\n" + "\n".join(lines) + f"\n  value: {value!r}"
        )


def check_event(name: str, data: Any, event_id: str | None = None) -> None:
    """An event as both transports carry it (SSE block or WebSocket frame): its ``data``
    against ``events/<name>.json``. Raises ``SchemaMismatch``."""
    if event_id is not None and not event_id:
        raise SchemaMismatch(f"{name}: an empty event id")
    _check(f"events/{name}.json", data, f"event {name}")


def check_ws_frame(frame: Any) -> None:
    """A decoded server WebSocket text frame: the envelope (``frame.json``), then its data
    against the event's or the reply's schema (a ``pong`` has no data). Raises
    ``SchemaMismatch``."""
    _check("frame.json", frame, "WebSocket frame")
    name = frame["event"]
    if name in schemas.names("replies"):
        _check(f"replies/{name}.json", frame.get("data"), f"reply {name}")
    else:
        if "data" not in frame:
            raise SchemaMismatch(f"event {name}: a frame without data: {frame!r}")
        check_event(name, frame["data"], frame.get("id"))


def check_ws_text(text: str | bytes) -> Any:
    """``check_ws_frame`` on a text frame as received; the decoded frame."""
    frame = json.loads(text)
    check_ws_frame(frame)
    return frame


def check_op(frame: Any) -> None:
    """A client → server frame against ``ops/<op>.json`` (for tests of the schemas themselves;
    the clients send malformed frames on purpose, so their sends are not checked)."""
    op = frame.get("op") if isinstance(frame, dict) else None
    _check(f"ops/{op}.json", frame, f"op {op!r}")
