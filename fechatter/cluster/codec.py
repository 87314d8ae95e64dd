"""The versioned wire format of forwarded chat commands, their replies and their errors.

A node that does not own a chat forwards the command to the owner (docs/cluster.md §3); this
module turns the command, the reply and any ``FechatterError`` into compact JSON bytes and
back. Frames (``v`` is ``PROTO``; keys at their default values are left out)::

    request  {"v":1,"chat":42,"cmd":"SendMessage","deadline":1718000000.123,
              "args":{"message":{"sender_id":7,"content":"hi","files":[],
                                 "reply_to":null,"client_id":"c1"}}}
    reply    {"v":1,"ok":{"message":{…},"created":true}}      ({"v":1,"ok":null} for None)
    error    {"v":1,"err":{"type":"NotFound","status":404,"code":"chat_not_found",
              "detail":"chat not found","errors":[{"field":…,"message":…}],
              "headers":{"Retry-After":"1"}}}

The codec is driven by the dataclasses' fields and resolved type hints, compiled once at import
into one encoder and one decoder per type, over a closed vocabulary: the commands listed in
``COMMANDS``, the records reachable from their fields and reply types, the enums among them,
and the errors in ``ERRORS``. Only command and error names travel; a nested record's type comes
from the field's hint, so nothing on the wire can name a class to load. An unsupported hint in
a command or reply is a ``TypeError`` at import, not on the first forward.

Decoding is strict and raises nothing but ``CodecError`` (500: bytes this node cannot read) or
its subclass ``ProtocolMismatch`` (503: another version, or a newer vocabulary — an unknown
command, field or key — refused before anything ran; retry at another node). Missing keys that
have a default take it, so a field added later with a default keeps the version: an old sender
is understood by a new receiver, and a new sender that leaves the field at its default by an
old one; a new sender that uses it gets ``ProtocolMismatch`` from an old receiver, never a
command silently read without it.

This module must never do I/O or import a transport: the router (plan step A4) moves the bytes.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, Union, cast, get_args, get_origin, get_type_hints

import orjson

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
    SetMemberRole,
    Typing,
    UpdateChat,
)
from fechatter.errors import (
    BadRequest,
    ChatMoved,
    CodecError,
    Conflict,
    DatabaseUnreachable,
    FechatterError,
    FieldError,
    Forbidden,
    HeadersTooLarge,
    Invalid,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProtocolMismatch,
    RateLimited,
    Unauthorized,
    Unavailable,
    rebuild,
)

PROTO = 1  # the version this node writes; bump it when a frame's meaning changes
# Versions this node reads: its own and the one before (docs/cluster.md §3), never below 1.
SUPPORTED: frozenset[int] = frozenset(range(max(1, PROTO - 1), PROTO + 1))
PROTO_HEADER = "Fechatter-Proto"  # the NATS header a request carries its version in (A4)
MAX_FRAME = 1024 * 1024  # bytes; NATS' default max_payload, so a larger frame never arrived
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # ids are PostgreSQL bigints (schemas.MAX_ID)

# Every command a node may forward, by class name on the wire. A command missing here fails
# tests/cluster/test_codec.py (it walks ``Command.__subclasses__()``).
COMMANDS: tuple[type[Command[Any]], ...] = (
    SendMessage,
    AddMembers,
    ReopenSingle,
    RemoveMember,
    Join,
    MarkRead,
    Typing,
    UpdateChat,
    DeleteChat,
    EditMessage,
    DeleteMessage,
    React,
    SetMemberRole,
)

# Every error a forwarded call may answer with, by class name. An error of an unlisted
# subclass travels as its nearest listed base (its code, detail and headers kept).
ERRORS: tuple[type[FechatterError], ...] = (
    FechatterError,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    Invalid,
    HeadersTooLarge,
    RateLimited,
    Unavailable,
    # A pool connect failing on the owner (PostgreSQL restarting). A peer of an older build
    # does not know the name and rebuilds it by its status: Unavailable, the same 503.
    DatabaseUnreachable,
    ChatMoved,
    CodecError,
    ProtocolMismatch,
)


def _always(command: Command[Any]) -> bool:
    return True


def _never(command: Command[Any]) -> bool:
    return False


def _send_retry_safe(command: Command[Any]) -> bool:
    return cast(SendMessage, command).message.client_id is not None


# May a command whose outcome is unknown (timeout, connection lost mid-request) be sent again?
# Only if running it twice leaves what running it once does (docs/cluster.md §3).
_RETRY_SAFE: Mapping[type[Command[Any]], Callable[[Command[Any]], bool]] = {
    # With a client_id the (sender, client_id) unique index answers a repeat with the
    # original (created=False); without one a repeat is a second message.
    SendMessage: _send_retry_safe,
    # Already-members are skipped; a repeat's reply may list fewer "newly added" (accepted).
    AddMembers: _always,
    # Re-admits only whoever is missing: a repeat finds both present and does nothing.
    ReopenSingle: _always,
    # A repeat of a success answers 404 member_not_found (and a repeated leave could hit a
    # re-joined member): never.
    RemoveMember: _never,
    # Joining twice answers with the existing membership.
    Join: _always,
    # The marker only moves forward: a repeat is a no-op.
    MarkRead: _always,
    # Coalesced by the actor while fresh; at worst one more typing event.
    Typing: _always,
    # Sets the same name/description again; at worst one more chat_updated event.
    UpdateChat: _always,
    # A repeat of a success answers 404 (the chat is gone), not the success: never.
    DeleteChat: _never,
    # The same content again; at worst edited_at moves and one more message_updated event.
    EditMessage: _always,
    # A repeat of a success answers 404 message_not_found (tombstones are not live): never.
    DeleteMessage: _never,
    # Idempotent by the storage: a repeat changes nothing and publishes nothing.
    React: _always,
    # Setting the role it already has changes nothing and publishes nothing.
    SetMemberRole: _always,
}


def retry_safe(command: Command[Any]) -> bool:
    """Whether ``command`` may be sent again when its first attempt's outcome is unknown.

    True when a second run leaves the same state as one (``SendMessage`` only with a
    ``client_id``); a command refused unexecuted (``chat_moved``, ``ProtocolMismatch``, no
    responders) may always be retried. Raises ``KeyError`` for a command not in ``COMMANDS``.
    """
    return _RETRY_SAFE[type(command)](command)


# -- results -----------------------------------------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded forwarded command: for chat ``chat_id``, to be dropped unrun after
    ``deadline`` (wall clock, seconds since the epoch); ``v`` is the sender's version (answer
    in it)."""

    chat_id: int
    command: Command[Any]
    deadline: float
    v: int = PROTO


@dataclass(frozen=True, slots=True)
class Ok(Generic[T]):
    """The owner ran the command and replied ``value``."""

    value: T


@dataclass(frozen=True, slots=True)
class Err:
    """The owner answered with ``error`` (a domain error, or a refusal such as
    ``ProtocolMismatch`` when it could not read the request: then nothing ran)."""

    error: FechatterError


# -- the compiled vocabulary ---------------------------------------------------------------


class _Bad(Exception):
    """A decoding failure inside a frame; ``path`` is filled in while it unwinds."""

    def __init__(self, message: str, *, newer: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.newer = newer  # a newer peer's vocabulary, not garbage: ProtocolMismatch
        self.path: list[str] = []


Encode = Callable[[Any], Any]
Decode = Callable[[Any], Any]
_MISSING = dataclasses.MISSING


def _describe(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _int_codec() -> tuple[Encode, Decode]:
    def check(value: Any) -> int:
        if type(value) is not int:
            raise _Bad(f"expected an integer, got {_describe(value)}")
        if not INT_MIN <= value <= INT_MAX:
            raise _Bad("integer out of the 64-bit range")
        return value

    return check, check


def _exact_codec(kind: type) -> tuple[Encode, Decode]:
    name = {str: "a string", bool: "a boolean"}[kind]

    def check(value: Any) -> Any:
        if type(value) is not kind:
            raise _Bad(f"expected {name}, got {_describe(value)}")
        return value

    return check, check


def _none_codec() -> tuple[Encode, Decode]:
    def check(value: Any) -> None:
        if value is not None:
            raise _Bad(f"expected null, got {_describe(value)}")

    return check, check


def _enum_codec(cls: type[enum.Enum]) -> tuple[Encode, Decode]:
    values = {member.value: member for member in cls}

    def encode(value: Any) -> Any:
        if type(value) is not cls:
            raise _Bad(f"expected a {cls.__name__}, got {_describe(value)}")
        return value.value

    def decode(value: Any) -> Any:
        try:
            return values[value]
        except (KeyError, TypeError):  # TypeError: an unhashable JSON value (list, object)
            raise _Bad(f"not a {cls.__name__}: {value!r:.40}") from None

    return encode, decode


def _optional_codec(inner: tuple[Encode, Decode]) -> tuple[Encode, Decode]:
    enc, dec = inner
    return (
        lambda value: None if value is None else enc(value),
        lambda value: None if value is None else dec(value),
    )


def _items(value: Any, index: int, codec: Callable[[Any], Any]) -> Any:
    try:
        return codec(value)
    except _Bad as exc:
        exc.path.append(str(index))
        raise


def _tuple_codec(item: tuple[Encode, Decode]) -> tuple[Encode, Decode]:
    enc, dec = item

    def encode(value: Any) -> list[Any]:
        if type(value) is not tuple:
            raise _Bad(f"expected a tuple, got {_describe(value)}")
        return [_items(v, i, enc) for i, v in enumerate(value)]

    def decode(value: Any) -> tuple[Any, ...]:
        if type(value) is not list:
            raise _Bad(f"expected an array, got {_describe(value)}")
        return tuple(_items(v, i, dec) for i, v in enumerate(value))

    return encode, decode


def _fixed_tuple_codec(items: list[tuple[Encode, Decode]]) -> tuple[Encode, Decode]:
    n = len(items)

    def encode(value: Any) -> list[Any]:
        if type(value) is not tuple or len(value) != n:
            raise _Bad(f"expected a tuple of {n}, got {_describe(value)}")
        return [_items(v, i, c[0]) for i, (v, c) in enumerate(zip(value, items, strict=True))]

    def decode(value: Any) -> tuple[Any, ...]:
        if type(value) is not list or len(value) != n:
            raise _Bad(f"expected an array of {n}, got {_describe(value)}")
        return tuple(_items(v, i, c[1]) for i, (v, c) in enumerate(zip(value, items, strict=True)))

    return encode, decode


class _Vocabulary:
    """Encoders and decoders for every type reachable from the commands and their replies,
    compiled once; ``records`` lists the dataclasses among them (for the tests)."""

    def __init__(self) -> None:
        self._codecs: dict[Any, tuple[Encode, Decode]] = {}
        self.records: list[type] = []

    def codec(self, hint: Any) -> tuple[Encode, Decode]:
        found = self._codecs.get(hint)
        if found is None:
            found = self._codecs[hint] = self._build(hint)
        return found

    def _build(self, hint: Any) -> tuple[Encode, Decode]:
        origin, args = get_origin(hint), get_args(hint)
        if hint is int:
            return _int_codec()
        if hint in (str, bool):
            return _exact_codec(hint)
        if hint is None or hint is type(None):
            return _none_codec()
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return _enum_codec(hint)
        if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
            (inner,) = (a for a in args if a is not type(None))
            return _optional_codec(self.codec(inner))
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return _tuple_codec(self.codec(args[0]))
        if origin is tuple and args and Ellipsis not in args:
            return _fixed_tuple_codec([self.codec(a) for a in args])
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return self._record(hint)
        raise TypeError(f"the cluster codec cannot carry {hint!r}")

    def _record(self, cls: type) -> tuple[Encode, Decode]:
        self.records.append(cls)
        hints = get_type_hints(cls)
        fields = [
            (f.name, self.codec(hints[f.name]), f.default)
            for f in dataclasses.fields(cls)
            if f.init
        ]
        if any(f.default_factory is not _MISSING for f in dataclasses.fields(cls)):
            raise TypeError(f"{cls.__name__}: default factories are not carried")
        names = frozenset(name for name, _, _ in fields)
        required = frozenset(name for name, _, default in fields if default is _MISSING)

        def encode(value: Any) -> dict[str, Any]:
            if type(value) is not cls:
                raise _Bad(f"expected a {cls.__name__}, got {_describe(value)}")
            out: dict[str, Any] = {}
            for name, (enc, _), default in fields:
                item = getattr(value, name)
                if default is not _MISSING and type(item) is type(default) and item == default:
                    continue  # left out: the receiver fills the default in
                try:
                    out[name] = enc(item)
                except _Bad as exc:
                    exc.path.append(name)
                    raise
            return out

        def decode(value: Any) -> Any:
            if type(value) is not dict:
                raise _Bad(f"expected an object ({cls.__name__}), got {_describe(value)}")
            unknown = value.keys() - names
            if unknown:
                raise _Bad(f"unknown field {min(unknown)!r} of {cls.__name__}", newer=True)
            missing = required - value.keys()
            if missing:
                raise _Bad(f"{cls.__name__} lacks {min(missing)!r}")
            kwargs: dict[str, Any] = {}
            for name, (_, dec), _default in fields:
                if name in value:
                    try:
                        kwargs[name] = dec(value[name])
                    except _Bad as exc:
                        exc.path.append(name)
                        raise
            return cls(**kwargs)

        return encode, decode


def reply_type(command_type: type[Command[Any]]) -> Any:
    """The reply hint ``R`` of a ``Command[R]`` subclass (``type(None)`` for ``None``)."""
    for base in getattr(command_type, "__orig_bases__", ()):
        if get_origin(base) is Command:
            return get_args(base)[0]
    raise TypeError(f"{command_type.__name__} does not subclass Command[R]")


_VOCABULARY = _Vocabulary()
_COMMANDS: dict[str, tuple[type[Command[Any]], Encode, Decode]] = {
    cls.__name__: (cls, *_VOCABULARY.codec(cls)) for cls in COMMANDS
}
_REPLIES: dict[type[Command[Any]], tuple[Encode, Decode]] = {
    cls: _VOCABULARY.codec(reply_type(cls)) for cls in COMMANDS
}
_ERRORS: dict[str, type[FechatterError]] = {cls.__name__: cls for cls in ERRORS}
# An error type this node does not know (a newer node's) is rebuilt as the base for its status.
_ERROR_BY_STATUS: dict[int, type[FechatterError]] = {
    cls.status: cls for cls in reversed(ERRORS) if cls not in (CodecError, ProtocolMismatch)
}
_FIELD_ERRORS = _VOCABULARY.codec(tuple[FieldError, ...])
RECORDS: tuple[type, ...] = tuple(_VOCABULARY.records)  # every record the codec carries


# -- frames ------------------------------------------------------------------------------


def _check_version(v: int) -> None:
    if v not in SUPPORTED:
        raise ProtocolMismatch(
            f"cluster protocol {v} is not spoken here (this node writes {PROTO}, reads "
            f"{'/'.join(map(str, sorted(SUPPORTED)))})"
        )


def _dumps(frame: dict[str, Any], what: str) -> bytes:
    try:
        return orjson.dumps(frame)
    except orjson.JSONEncodeError as exc:  # a lone surrogate in a string
        raise CodecError(f"cannot encode {what}: {exc}") from None


def _encode_value(enc: Encode, value: Any, what: str) -> Any:
    try:
        return enc(value)
    except _Bad as exc:
        path = ".".join(reversed(exc.path)) or "value"
        raise CodecError(f"cannot encode {what}: {path}: {exc.message}") from None


def _frame(data: bytes, keys: frozenset[str], required: frozenset[str]) -> dict[str, Any]:
    """The top-level object of a frame, its version checked first (any layout may change
    with the version)."""
    if len(data) > MAX_FRAME:
        raise CodecError(f"cluster frame of {len(data)} bytes is over {MAX_FRAME}")
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise CodecError("cluster frame is not valid JSON") from None
    if type(frame) is not dict:
        raise CodecError(f"cluster frame is {_describe(frame)}, not an object")
    v = frame.get("v")
    if type(v) is not int:
        raise CodecError("cluster frame has no integer protocol version 'v'")
    _check_version(v)
    unknown = frame.keys() - keys
    if unknown:
        raise ProtocolMismatch(f"cluster frame has an unknown key {min(unknown)!r}")
    missing = required - frame.keys()
    if missing:
        raise CodecError(f"cluster frame lacks {min(missing)!r}")
    return frame


def _decode_value(dec: Decode, value: Any, what: str) -> Any:
    try:
        return dec(value)
    except _Bad as exc:
        path = ".".join(reversed(exc.path))
        message = f"{what}: {path + ': ' if path else ''}{exc.message}"
        raise (ProtocolMismatch if exc.newer else CodecError)(message) from None


def encode_request(
    chat_id: int, command: Command[Any], deadline: float, *, v: int = PROTO
) -> bytes:
    """The request frame forwarding ``command`` for chat ``chat_id``; ``deadline`` is wall
    clock seconds since the epoch. Raises ``CodecError`` for a command not in ``COMMANDS`` or
    a value that cannot travel (an integer past 64 bits, a lone surrogate), ``ProtocolMismatch``
    for a ``v`` this node cannot write."""
    _check_version(v)
    name = type(command).__name__
    entry = _COMMANDS.get(name)
    if entry is None or entry[0] is not type(command):
        raise CodecError(f"{name} is not a forwardable command")
    if type(chat_id) is not int or not INT_MIN <= chat_id <= INT_MAX:
        raise CodecError(f"cannot encode chat id {chat_id!r}")
    if type(deadline) not in (int, float) or not math.isfinite(deadline):
        raise CodecError(f"cannot encode deadline {deadline!r}")
    args = _encode_value(entry[1], command, name)
    frame = {"v": v, "chat": chat_id, "cmd": name, "deadline": deadline, "args": args}
    return _dumps(frame, name)


_REQUEST_KEYS = frozenset({"v", "chat", "cmd", "deadline", "args"})


def decode_request(data: bytes) -> Request:
    """The request in ``data``. Raises ``ProtocolMismatch`` (another version, an unknown
    command, key or field) or ``CodecError`` (anything else unreadable); nothing else."""
    frame = _frame(data, _REQUEST_KEYS, _REQUEST_KEYS)
    name, chat_id, deadline = frame["cmd"], frame["chat"], frame["deadline"]
    if type(name) is not str:
        raise CodecError("cluster request 'cmd' is not a string")
    entry = _COMMANDS.get(name)
    if entry is None:
        raise ProtocolMismatch(f"unknown cluster command {name!r:.60}")
    if type(chat_id) is not int or not INT_MIN <= chat_id <= INT_MAX:
        raise CodecError("cluster request 'chat' is not a 64-bit integer")
    if type(deadline) not in (int, float):  # orjson reads no NaN or infinity
        raise CodecError("cluster request 'deadline' is not a number")
    command = _decode_value(entry[2], frame["args"], name)
    return Request(chat_id=chat_id, command=command, deadline=float(deadline), v=frame["v"])


def encode_reply(command: Command[T], reply: T, *, v: int = PROTO) -> bytes:
    """The reply frame carrying ``reply`` to ``command`` (which must be of ``command``'s reply
    type). Raises ``CodecError`` when it is not, or cannot travel; ``ProtocolMismatch`` for a
    ``v`` this node cannot write."""
    _check_version(v)
    codec = _REPLIES.get(type(command))
    if codec is None:
        raise CodecError(f"{type(command).__name__} is not a forwardable command")
    what = f"the reply to {type(command).__name__}"
    return _dumps({"v": v, "ok": _encode_value(codec[0], reply, what)}, what)


def encode_error(error: FechatterError, *, v: int = PROTO) -> bytes:
    """The reply frame carrying ``error``, as its class or, for a class not in ``ERRORS``, its
    nearest base that is (code, detail, field errors and headers kept). Raises
    ``ProtocolMismatch`` for a ``v`` this node cannot write; ``CodecError`` for a lone
    surrogate in its text."""
    _check_version(v)
    cls = next(c for c in type(error).__mro__ if c in ERRORS)
    body: dict[str, Any] = {
        "type": cls.__name__,
        "status": cls.status,
        "code": error.code,
        "detail": error.detail,
    }
    if error.errors:
        body["errors"] = _encode_value(_FIELD_ERRORS[0], tuple(error.errors), "field errors")
    if error.headers:
        body["headers"] = dict(error.headers)
    return _dumps({"v": v, "err": body}, f"a {cls.__name__} error")


_REPLY_KEYS = frozenset({"v", "ok", "err"})
_ERROR_KEYS = frozenset({"type", "status", "code", "detail", "errors", "headers"})


def decode_reply(data: bytes, command: Command[T]) -> Ok[T] | Err:
    """The owner's answer to ``command``: ``Ok`` with the reply, or ``Err`` with the error
    rebuilt as its class. Raises ``CodecError`` / ``ProtocolMismatch`` when the answer itself
    cannot be read — the command may then have run: treat it like a timeout (retry only if
    ``retry_safe``)."""
    frame = _frame(data, _REPLY_KEYS, frozenset({"v"}))
    if ("ok" in frame) == ("err" in frame):
        raise CodecError("cluster reply must hold exactly one of 'ok' and 'err'")
    if "err" in frame:
        return Err(_decode_error(frame["err"]))
    codec = _REPLIES.get(type(command))
    if codec is None:
        raise CodecError(f"{type(command).__name__} is not a forwardable command")
    return Ok(_decode_value(codec[1], frame["ok"], f"the reply to {type(command).__name__}"))


def _decode_error(body: Any) -> FechatterError:
    if type(body) is not dict:
        raise CodecError("cluster error is not an object")
    unknown = body.keys() - _ERROR_KEYS
    if unknown:
        raise ProtocolMismatch(f"cluster error has an unknown key {min(unknown)!r}")
    name, status = body.get("type"), body.get("status")
    code, detail = body.get("code"), body.get("detail")
    if type(name) is not str or type(status) is not int:
        raise CodecError("cluster error lacks a string 'type' and an integer 'status'")
    if type(code) is not str or type(detail) is not str:
        raise CodecError("cluster error lacks a string 'code' and 'detail'")
    cls = _ERRORS.get(name)
    if cls is None:
        cls = _ERROR_BY_STATUS.get(status)
        if cls is None:
            raise ProtocolMismatch(f"unknown cluster error {name!r:.60} with status {status}")
    elif cls.status != status:
        raise CodecError(f"cluster error {name} has status {status}, not {cls.status}")
    errors = _decode_value(_FIELD_ERRORS[1], body.get("errors", []), "field errors")
    headers = body.get("headers", {})
    if type(headers) is not dict or not all(type(h) is str for h in headers.values()):
        raise CodecError("cluster error 'headers' is not an object of strings")
    return rebuild(cls, detail, code, list(errors), dict(headers))
