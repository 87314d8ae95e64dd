"""The realtime JSON Schemas (``fechatter/realtime/schemas``): valid, complete, and strict.

Completeness is checked against the code, not a list: every call that names an event (an
``Event``, a chat actor's ``_publish``, a workspace or outbox event, a WebSocket reply frame)
is found in the source with ``ast`` and its name resolved; an event the code can emit without
a schema fails here, and so does a schema no code emits. The stream clients validate every
event the other tests receive (``tests/realtime/schema_check.py``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

import fechatter
from fechatter import events
from fechatter.realtime import schemas
from fechatter.realtime.protocol import ws as ws_protocol
from fechatter.storage import workspace_writes
from tests.realtime.schema_check import (
    SchemaMismatch,
    _validators,
    check_event,
    check_op,
    check_ws_frame,
)

PACKAGE = Path(fechatter.__file__).parent

# Calls that name an event, and the position of the name among their arguments.
NAMING_CALLS = {
    "Event": 0,
    "_publish": 1,
    "WorkspaceEvent": 1,
    "OutboxEvent": 2,
    "event_frame": 0,
}
# Call sites that pass on a name decided elsewhere (a variable), reviewed: each forwards an
# event that one of the resolved sites (or the SQL migrations) named. A new one must be
# looked at and added here.
FORWARDING = {
    ("actors/chat.py", "name"),  # _publish's own Event(name, …); REACTION_ADDED / _REMOVED
    ("cluster/wiring.py", "name"),  # a user-subject event from another node, as it came
    ("domain/workspace_events.py", "e.name"),  # WorkspaceEvent's name
    ("storage/outbox.py", "name"),  # outbox rows written by the chat stores
    ("storage/outbox.py", "r['name']"),  # outbox rows read back
}
CONSTANT_MODULES = (events, workspace_writes)


def _constant(node: ast.expr) -> str | None:
    """The string a name argument stands for, if it is a literal or a module constant."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
    if name is not None and name.isupper():
        for module in CONSTANT_MODULES:
            value = getattr(module, name, None)
            if isinstance(value, str):
                return value
    return None


def _emitted() -> tuple[set[str], set[tuple[str, str]]]:
    """Every event name the package's source emits, and the forwarding sites."""
    found: set[str] = set()
    forwarding: set[tuple[str, str]] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.IfExp):  # name = events.A if … else events.B
                chosen = {_constant(node.body), _constant(node.orelse)}
                if None not in chosen and all(getattr(events, n, None) for n in _names(node)):
                    found.update(c for c in chosen if c is not None)
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            position = NAMING_CALLS.get(called)
            if position is None or len(node.args) <= position:
                continue
            if called == "Event" and isinstance(func, ast.Attribute) and _is_trio(func):
                continue  # trio.Event()
            arg = node.args[position]
            value = _constant(arg)
            if value is not None:
                found.add(value)
            else:
                forwarding.add((rel, ast.unparse(arg).replace('"', "'")))
    for sql in (PACKAGE / "storage" / "migrations").rglob("*.sql"):
        found.update(re.findall(r"'([a-z_]+\.[a-z_]+)'", sql.read_text(encoding="utf-8")))
    return found, forwarding


def _names(node: ast.IfExp) -> list[str]:
    """The constant names of a conditional's two branches (``events.X`` / ``X``)."""
    return [
        b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "")
        for b in (node.body, node.orelse)
    ]


def _is_trio(func: ast.Attribute) -> bool:
    return isinstance(func.value, ast.Name) and func.value.id == "trio"


def test_every_schema_file_is_a_valid_2020_12_schema() -> None:
    compiled = _validators()  # check_schema on each, $ids checked by load()
    assert "defs.json" in compiled
    assert "frame.json" in compiled
    assert len(compiled) == 2 + sum(len(schemas.names(f)) for f in schemas.FOLDERS)


def test_every_event_the_code_emits_has_a_schema_and_no_schema_is_stale() -> None:
    emitted, forwarding = _emitted()
    assert forwarding == FORWARDING, "review the new call sites that forward an event name"
    replies = {"ack", "error"} | {"pong"}  # pong is ws_protocol.PONG, a prebuilt frame
    assert ws_protocol.PONG.endswith(b'{"event":"pong"}')
    assert emitted - replies == schemas.names("events"), "event schemas vs the code"
    assert replies == schemas.names("replies")


def test_op_schemas_are_the_ops_the_server_runs() -> None:
    assert schemas.names("ops") == {"ping", *ws_protocol.OPS}


MESSAGE: dict[str, Any] = {
    "id": 91,
    "chat_id": 3,
    "seq": 17,
    "sender_id": 2,
    "content": "hi",
    "files": [],
    "reply_to": None,
    "client_id": "c-1",
    "created_at": "2026-01-02T03:04:05.123456Z",
    "edited_at": None,
    "deleted": False,
    "thread_id": None,
    "reply_count": 0,
    "last_reply_at": None,
    "reactions": [{"emoji": "👍", "count": 1, "user_ids": [2]}],
    "mentions": [],
    "mentions_channel": False,
}


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("message.created", {**MESSAGE, "surprise": 1}),  # a field docs/api.md does not list
        ("message.created", {k: v for k, v in MESSAGE.items() if k != "seq"}),
        ("message.updated", {**MESSAGE, "created_at": "2026-01-02 03:04:05"}),  # not RFC 3339
        ("message.deleted", {"id": 1, "chat_id": 1, "seq": 0}),
        ("typing", {"chat_id": "3", "user_id": 2}),
        ("presence", {"user_id": 2, "status": "away"}),  # away carries text and expires_at
        ("presence", {"user_id": 2, "status": "online", "text": None, "expires_at": None}),
        ("resync", {"reason": "because"}),
        ("ready", {"user_id": 1, "connection_id": 1}),
        ("workspace.member_updated", {"workspace_id": 1, "user_id": 2, "role": "owner"}),
    ],
)
def test_a_payload_that_drifts_fails(name: str, data: dict[str, Any]) -> None:
    with pytest.raises(SchemaMismatch, match=re.escape(f"events/{name}.json")):
        check_event(name, data)


def test_the_documented_shapes_pass() -> None:
    check_event("message.created", MESSAGE)
    check_event("presence", {"user_id": 2, "status": "online"})
    check_event("presence", {"user_id": 2, "status": "busy", "text": None, "expires_at": None})
    check_ws_frame({"id": "e-1", "event": "typing", "data": {"chat_id": 3, "user_id": 2}})
    check_ws_frame({"event": "pong"})
    check_ws_frame({"event": "ack", "data": {"client_id": "c-1", "message": MESSAGE}})
    problem = {"type": "about:blank", "title": "t", "status": 422, "code": "x", "detail": "d"}
    check_ws_frame({"event": "error", "data": {**problem, "op": "send"}})
    with pytest.raises(SchemaMismatch, match=r"frame\.json"):
        check_ws_frame({"event": "typing", "data": {}, "extra": 1})
    with pytest.raises(SchemaMismatch, match="no schema"):
        check_ws_frame({"event": "nonesuch", "data": {}})


def test_op_schemas() -> None:
    check_op({"op": "ping"})
    check_op({"op": "typing", "chat_id": 3})
    check_op({"op": "read", "chat_id": 3, "message_id": 91})
    check_op({"op": "send", "chat_id": 3, "content": "hi", "client_id": "c-1", "thread_id": 9})
    for bad in (
        {"op": "read", "chat_id": 3},
        {"op": "send", "chat_id": 0},
        {"op": "send", "chat_id": 3, "client_id": "x" * 65},
        {"op": "shout"},
    ):
        with pytest.raises(SchemaMismatch):
            check_op(bad)
