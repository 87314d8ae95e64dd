"""The cluster wire codec (docs/cluster.md §3, plan step A3): every command, reply and error
round-trips; anything else is refused with the codec's own errors, never another exception.

Pure code, no I/O: hypothesis draws instances of every command and reply type from their type
hints (integers within the 64-bit range ids live in), and garbage frames to decode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import inspect
import sys
import types
from typing import Any, Union, get_args, get_origin, get_type_hints

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fechatter import errors
from fechatter.actors.commands import (
    AddMembers,
    Command,
    DeleteChat,
    DeleteMessage,
    EditMessage,
    Join,
    MarkRead,
    React,
    RemoveMember,
    ReopenSingle,
    SendMessage,
    SendResult,
    SetMemberRole,
    Typing,
    UpdateChat,
)
from fechatter.bus.base import NoResponders
from fechatter.cluster import codec
from fechatter.cluster.codec import (
    INT_MAX,
    INT_MIN,
    Err,
    Ok,
    Request,
    decode_reply,
    decode_request,
    encode_error,
    encode_reply,
    encode_request,
    reply_type,
    retry_safe,
)
from fechatter.errors import CodecError, FechatterError, FieldError, ProtocolMismatch
from fechatter.models import Chat, Member, Message, NewMessage, Role

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _all_commands() -> list[type[Command[Any]]]:
    """Every ``Command`` subclass, recursively, that its module names: ``slots=True`` makes
    a dataclass a new class, and the discarded original lingers among the subclasses."""
    found: list[type[Command[Any]]] = []
    stack = list(Command.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if getattr(sys.modules[cls.__module__], cls.__qualname__, None) is cls:
            found.append(cls)
    return sorted(set(found), key=lambda c: c.__name__)


COMMAND_TYPES = _all_commands()
ERROR_TYPES = sorted(
    (
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, FechatterError) and cls.__module__ == "fechatter.errors"
    ),
    key=lambda c: c.__name__,
)


def strategy(hint: Any) -> st.SearchStrategy[Any]:
    """Values of type ``hint`` (the codec's vocabulary); ints within the 64-bit range."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is int:
        return st.integers(INT_MIN, INT_MAX)
    if hint is None or hint is type(None):
        return st.none()
    if hint in (str, bool) or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return st.from_type(hint)
    if origin in (Union, types.UnionType):
        return st.one_of(*(strategy(a) for a in args))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(strategy(args[0]), max_size=4).map(tuple)
    if origin is tuple:
        return st.tuples(*(strategy(a) for a in args))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        hints = get_type_hints(hint)
        fields = {f.name: strategy(hints[f.name]) for f in dataclasses.fields(hint)}
        return st.builds(hint, **fields)
    raise TypeError(f"no strategy for {hint!r}")  # pragma: no cover - a new kind of hint


def _new_message(content: str = "hi", client_id: str | None = "c1") -> NewMessage:
    return NewMessage(sender_id=7, content=content, files=(), reply_to=None, client_id=client_id)


def _request(args: Any, **frame: Any) -> bytes:
    base = {"v": 1, "chat": 42, "cmd": "Join", "deadline": 1.5, "args": args}
    return orjson.dumps({**base, **frame})


# -- coverage of the vocabulary -----------------------------------------------------------


def test_every_command_is_registered_with_a_retry_decision() -> None:
    assert COMMAND_TYPES, "the walk found no commands"
    missing = [c.__name__ for c in COMMAND_TYPES if c not in codec.COMMANDS]
    assert not missing, f"commands without a codec entry (add them to codec.COMMANDS): {missing}"
    undecided = [c.__name__ for c in COMMAND_TYPES if c not in codec._RETRY_SAFE]
    assert not undecided, f"commands without a retry_safe decision: {undecided}"


def test_every_error_class_is_registered() -> None:
    assert len(ERROR_TYPES) >= 14
    assert [c.__name__ for c in ERROR_TYPES if c not in codec.ERRORS] == []


def test_a_command_outside_the_vocabulary_is_refused() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True, slots=True)
    class Rogue(Command[None]):
        user_id: int

    with pytest.raises(CodecError, match="not a forwardable command"):
        encode_request(1, Rogue(1), 1.0)
    with pytest.raises(CodecError, match="not a forwardable command"):
        encode_reply(Rogue(1), None)


# -- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", COMMAND_TYPES, ids=[c.__name__ for c in COMMAND_TYPES])
@SETTINGS
@given(data=st.data())
def test_every_command_round_trips(cls: type[Command[Any]], data: st.DataObject) -> None:
    command = data.draw(strategy(cls))
    chat_id = data.draw(st.integers(INT_MIN, INT_MAX))
    deadline = data.draw(st.floats(allow_nan=False, allow_infinity=False))
    frame = encode_request(chat_id, command, deadline)
    assert orjson.loads(frame)["v"] == codec.PROTO
    assert decode_request(frame) == Request(chat_id, command, deadline, codec.PROTO)


@pytest.mark.parametrize("cls", COMMAND_TYPES, ids=[c.__name__ for c in COMMAND_TYPES])
@SETTINGS
@given(data=st.data())
def test_every_reply_round_trips(cls: type[Command[Any]], data: st.DataObject) -> None:
    command = data.draw(strategy(cls))
    reply = data.draw(strategy(reply_type(cls)))
    assert decode_reply(encode_reply(command, reply), command) == Ok(reply)


def test_the_reply_types_are_the_ones_the_design_names() -> None:
    replies = {c.__name__: reply_type(c) for c in COMMAND_TYPES}
    assert replies["SendMessage"] is SendResult
    assert replies["EditMessage"] is Message
    assert replies["Join"] is Member
    assert replies["SetMemberRole"] is Member
    assert replies["UpdateChat"] is Chat
    assert replies["AddMembers"] == tuple[Member, ...]
    assert replies["Typing"] is type(None)
    assert {SendResult, Message, Member, Chat} <= set(codec.RECORDS)


def test_a_reply_of_the_wrong_type_is_refused() -> None:
    member = Member(1, 2, Role.ADMIN, "2026-01-01T00:00:00.000000Z", "Ada")
    with pytest.raises(CodecError, match="expected a Member"):
        encode_reply(Join(1), None)
    with pytest.raises(CodecError, match=r"AddMembers: 0: expected a Member"):
        encode_reply(AddMembers(1, (2,)), (SendResult,))
    assert decode_reply(encode_reply(Join(1), member), Join(1)) == Ok(member)
    # A reply frame is read as the reply type of the command asked, whatever it holds.
    with pytest.raises(CodecError):
        decode_reply(encode_reply(Join(1), member), EditMessage(1, 2, "x"))


@pytest.mark.parametrize("cls", ERROR_TYPES, ids=[c.__name__ for c in ERROR_TYPES])
@SETTINGS
@given(
    detail=st.text(),
    code=st.text(min_size=1),
    field_errors=st.lists(st.builds(FieldError, st.text(), st.text()), max_size=3),
    headers=st.dictionaries(st.text(), st.text(), max_size=3),
)
def test_every_error_is_rebuilt_as_its_class(
    cls: type[FechatterError],
    detail: str,
    code: str,
    field_errors: list[FieldError],
    headers: dict[str, str],
) -> None:
    sent = errors.rebuild(cls, detail, code, field_errors, headers)
    got = decode_reply(encode_error(sent), Typing(1))
    assert isinstance(got, Err)
    assert type(got.error) is cls
    assert (got.error.detail, got.error.code) == (detail, code)
    assert (got.error.errors, got.error.headers) == (field_errors, headers)
    assert got.error.problem() == sent.problem()
    assert str(got.error) == detail


def test_errors_from_their_constructors_keep_headers_and_field_errors() -> None:
    cases: list[FechatterError] = [
        errors.RateLimited("slow down", retry_after=2.2),
        errors.Unavailable("the chat did not answer in time", code="chat_unavailable"),
        errors.Unavailable(retry_after=7),
        errors.Unauthorized(code="token_expired"),
        errors.Invalid.field("content", "must not be empty"),
        errors.NotFound("chat not found", code="chat_not_found"),
        ProtocolMismatch("cluster protocol 2 is not spoken here"),
    ]
    for sent in cases:
        got = decode_reply(encode_error(sent), SendMessage(_new_message()))
        assert isinstance(got, Err)
        assert type(got.error) is type(sent)
        assert got.error.headers == sent.headers
        assert got.error.errors == sent.errors
        assert got.error.problem() == sent.problem()
    assert cases[0].headers == {"Retry-After": "3"}
    assert cases[2].headers == {"Retry-After": "7"}
    assert cases[4].errors == [FieldError("content", "must not be empty")]


def test_an_unlisted_error_class_travels_as_its_nearest_listed_base() -> None:
    got = decode_reply(encode_error(NoResponders("nobody home")), Typing(1))
    assert isinstance(got, Err)
    assert type(got.error) is errors.Unavailable
    assert got.error.code == "bus_no_responders"
    assert got.error.headers == {"Retry-After": "1"}


def test_an_error_class_from_a_newer_node_is_rebuilt_by_its_status() -> None:
    # A class a newer node added (hypothetical: this node has no ShardDraining).
    body = {"type": "ShardDraining", "status": 503, "code": "shard_draining", "detail": "later"}
    got = decode_reply(orjson.dumps({"v": 1, "err": body}), Typing(1))
    assert isinstance(got, Err)
    assert (type(got.error), got.error.code) == (errors.Unavailable, "shard_draining")
    body = {**body, "status": 418}
    with pytest.raises(ProtocolMismatch, match="unknown cluster error 'ShardDraining'"):
        decode_reply(orjson.dumps({"v": 1, "err": body}), Typing(1))
    body = {**body, "type": "NotFound", "status": 500}
    with pytest.raises(CodecError, match="status 500, not 404"):
        decode_reply(orjson.dumps({"v": 1, "err": body}), Typing(1))


# -- versions and vocabulary --------------------------------------------------------------


def test_another_version_is_a_clear_retryable_protocol_mismatch() -> None:
    frame = orjson.loads(encode_request(42, Join(5), 1.0))
    for v in (0, 2, 99):
        with pytest.raises(ProtocolMismatch) as caught:
            decode_request(orjson.dumps({**frame, "v": v}))
        assert caught.value.status == 503
        assert caught.value.code == "protocol_mismatch"
        assert caught.value.headers == {"Retry-After": "1"}
        assert f"protocol {v} is not spoken here (this node writes 1, reads 1)" in str(caught.value)
        with pytest.raises(ProtocolMismatch):
            decode_reply(orjson.dumps({"v": v, "ok": None}), Typing(1))
    # The version is checked before the layout: a v2 frame of any shape is a mismatch.
    with pytest.raises(ProtocolMismatch):
        decode_request(b'{"v":2,"anything":"else"}')
    with pytest.raises(ProtocolMismatch):
        encode_request(42, Join(5), 1.0, v=2)
    assert issubclass(ProtocolMismatch, CodecError)  # the codec's only two errors


def test_a_newer_vocabulary_is_a_protocol_mismatch() -> None:
    with pytest.raises(ProtocolMismatch, match="unknown cluster command 'Pin'"):
        decode_request(_request({"user_id": 1}, cmd="Pin"))
    with pytest.raises(ProtocolMismatch, match="unknown field 'silent' of Join"):
        decode_request(_request({"user_id": 1, "silent": True}))
    bad = {
        "message": {
            "sender_id": 1,
            "content": "",
            "files": [],
            "reply_to": None,
            "client_id": None,
            "x": 1,
        }
    }
    with pytest.raises(ProtocolMismatch, match="unknown field 'x' of NewMessage"):
        decode_request(_request(bad, cmd="SendMessage"))
    with pytest.raises(ProtocolMismatch, match="unknown key 'trace'"):
        decode_request(_request({"user_id": 1}, trace="abc"))


def test_defaults_are_left_out_and_filled_in() -> None:
    """A field added later with a default keeps the version: it is left out at its default,
    and a frame without it (an older sender) reads as the default."""
    frame = orjson.loads(encode_request(1, RemoveMember(by=1, user_id=2), 1.0))
    assert frame["args"] == {"by": 1, "user_id": 2}
    forced = orjson.loads(encode_request(1, RemoveMember(by=1, user_id=2, force=True), 1.0))
    assert forced["args"] == {"by": 1, "user_id": 2, "force": True}
    assert decode_request(orjson.dumps(frame)).command == RemoveMember(1, 2, False)


# -- strictness -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[" * 5000, "not valid JSON"),
        (b"[]", "is list, not an object"),
        (b'{"v":"1"}', "no integer protocol version"),
        (b'{"v":true}', "no integer protocol version"),
        (_request({"user_id": 1}, chat="42"), "'chat' is not a 64-bit integer"),
        (_request({"user_id": 1}, chat=2**64 - 1), "'chat' is not a 64-bit integer"),
        (_request({"user_id": 1}, deadline="soon"), "'deadline' is not a number"),
        (_request({"user_id": 1}, cmd=7), "'cmd' is not a string"),
        (orjson.dumps({"v": 1, "chat": 1, "cmd": "Join", "args": {}}), "lacks 'deadline'"),
        (_request({}), "Join lacks 'user_id'"),
        (_request([1]), "expected an object"),
        (_request({"user_id": 2**63}), "Join: user_id: integer out of the 64-bit range"),
        (_request({"user_id": True}), "Join: user_id: expected an integer, got bool"),
        (_request({"user_id": 1.0}), "Join: user_id: expected an integer, got float"),
        (
            _request({"by": 1, "user_id": 2, "role": "king"}, cmd="SetMemberRole"),
            "SetMemberRole: role: not a Role",
        ),
        (
            _request({"by": 1, "user_id": 2, "role": ["owner"]}, cmd="SetMemberRole"),
            "SetMemberRole: role: not a Role",
        ),
        (
            _request({"by": 1, "user_ids": [1, 2, 3]}, cmd="ReopenSingle"),
            "ReopenSingle: user_ids: expected an array of 2",
        ),
        (
            _request(
                {
                    "message": {
                        "sender_id": 1,
                        "content": "x",
                        "files": ["a", 3],
                        "reply_to": None,
                        "client_id": None,
                    }
                },
                cmd="SendMessage",
            ),
            "SendMessage: message.files.1: expected a string, got int",
        ),
    ],
)
def test_malformed_requests_are_codec_errors_naming_the_place(raw: bytes, message: str) -> None:
    with pytest.raises(CodecError) as caught:
        decode_request(raw)
    assert type(caught.value) is CodecError
    assert message in str(caught.value)
    assert caught.value.status == 500


@pytest.mark.parametrize(
    "raw",
    [
        b'{"v":1}',
        b'{"v":1,"ok":null,"err":null}',
        b'{"v":1,"err":[]}',
        b'{"v":1,"err":{"type":"NotFound","status":404,"code":"x"}}',
        b'{"v":1,"err":{"type":"NotFound","status":404,"code":"x","detail":"d","errors":[1]}}',
        b'{"v":1,"err":{"type":"NotFound","status":404,"code":"x","detail":"d","headers":[]}}',
        b'{"v":1,"err":{"type":"NotFound","status":404,"code":"x","detail":"d","headers":{"A":1}}}',
        b'{"v":1,"ok":{"user_id":1}}',
    ],
)
def test_malformed_replies_are_codec_errors(raw: bytes) -> None:
    with pytest.raises(CodecError):
        decode_reply(raw, Join(1))


def test_a_frame_over_the_limit_is_refused_unread() -> None:
    with pytest.raises(CodecError, match="over 1048576"):
        decode_request(b" " * (codec.MAX_FRAME + 1))


def test_values_that_cannot_travel_are_codec_errors_on_encode() -> None:
    with pytest.raises(CodecError, match=r"Join: user_id: integer out of the 64-bit range"):
        encode_request(1, Join(2**63), 1.0)
    with pytest.raises(CodecError, match="cannot encode SendMessage"):
        encode_request(1, SendMessage(_new_message(content="\ud800")), 1.0)
    with pytest.raises(CodecError, match="chat id"):
        encode_request(2**64, Join(1), 1.0)
    with pytest.raises(CodecError, match="deadline"):
        encode_request(1, Join(1), float("nan"))
    with pytest.raises(CodecError, match=r"message\.files: expected a tuple"):
        encode_request(1, SendMessage(dataclasses.replace(_new_message(), files=["a"])), 1.0)  # type: ignore[arg-type]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(INT_MIN, 2**64 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200))
def test_garbage_bytes_raise_only_codec_errors(raw: bytes) -> None:
    for decode in (decode_request, lambda b: decode_reply(b, SendMessage(_new_message()))):
        with contextlib.suppress(CodecError):
            decode(raw)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_garbage_json_in_any_place_raises_only_codec_errors(data: st.DataObject) -> None:
    """A valid frame with one value (at any depth) replaced by arbitrary JSON."""
    cls = data.draw(st.sampled_from(COMMAND_TYPES))
    command = data.draw(strategy(cls))
    request = orjson.loads(encode_request(1, command, 1.0))
    reply = orjson.loads(encode_reply(command, data.draw(strategy(reply_type(cls)))))
    for frame, decode in (
        (request, decode_request),
        (reply, lambda b: decode_reply(b, command)),
    ):
        node: Any = frame
        while True:  # walk down to a random container, replace one of its items
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = data.draw(st.sampled_from(keys))
            if isinstance(node[key], dict | list) and data.draw(st.booleans()):
                node = node[key]
                continue
            node[key] = data.draw(JSON)
            break
        with contextlib.suppress(CodecError):
            decode(orjson.dumps(frame))


# -- size and retries -------------------------------------------------------------------------


def test_a_4000_character_send_encodes_under_5_kib() -> None:
    words = "the quick brown fox jumps over the lazy dog, "
    content = (words * 100)[:4000]
    command = SendMessage(
        dataclasses.replace(
            _new_message(content, "0b6f2c1e-7a4d-4f5e-9c3b-2d8e1f0a9b7c"),
            files=("/files/1/abc.png",),
            mentions=(3, 4),
        )
    )
    frame = encode_request(2**40, command, 1718000000.123)
    assert len(frame) < 5 * 1024, len(frame)
    assert len(frame) - len(content) < 400  # the framing itself is small
    message = Message(
        id=2**40,
        chat_id=2**40,
        seq=123456,
        sender_id=7,
        content=content,
        files=(),
        reply_to=None,
        client_id="c1",
        created_at="2026-01-01T00:00:00.000000Z",
        edited_at=None,
    )
    assert len(encode_reply(command, SendResult(message, created=True))) < 5 * 1024


RETRY_SAFE: dict[type[Command[Any]], bool] = {
    AddMembers: True,
    ReopenSingle: True,
    RemoveMember: False,
    Join: True,
    MarkRead: True,
    Typing: True,
    UpdateChat: True,
    DeleteChat: False,
    EditMessage: True,
    DeleteMessage: False,
    React: True,
    SetMemberRole: True,
}


@pytest.mark.parametrize("cls", COMMAND_TYPES, ids=[c.__name__ for c in COMMAND_TYPES])
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_retry_safe_follows_the_design(cls: type[Command[Any]], data: st.DataObject) -> None:
    command = data.draw(strategy(cls))
    if cls is SendMessage:
        assert isinstance(command, SendMessage)
        assert retry_safe(command) is (command.message.client_id is not None)
    else:
        assert retry_safe(command) is RETRY_SAFE[cls]


def test_a_send_is_retry_safe_only_with_a_client_id() -> None:
    assert retry_safe(SendMessage(_new_message(client_id="c1")))
    assert not retry_safe(SendMessage(_new_message(client_id=None)))
