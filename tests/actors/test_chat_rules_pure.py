"""The chat rules as pure functions (no storage, no actor): every branch, every refusal."""

from __future__ import annotations

import pickle

import pytest

from fechatter.actors import chat_rules as rules
from fechatter.actors.commands import (
    AddMembers,
    Command,
    DeleteChat,
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
from fechatter.errors import (
    FechatterError,
    FieldError,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from fechatter.models import ChatType, Member, Message, NewMessage, Role

ALL = list(ChatType)
OWNER, ADMIN, MEMBER = Role.OWNER, Role.ADMIN, Role.MEMBER


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("role", list(Role))
def test_who_may_add(kind: ChatType, role: Role) -> None:
    if kind is ChatType.SINGLE:
        with pytest.raises(Invalid):
            rules.check_add(kind, role)
    elif kind is ChatType.GROUP or role in (OWNER, ADMIN):
        rules.check_add(kind, role)
    else:
        with pytest.raises(Forbidden):
            rules.check_add(kind, role)


def test_who_may_remove() -> None:
    group, single = ChatType.GROUP, ChatType.SINGLE
    rules.check_remove(group, 1, MEMBER, 1, MEMBER)  # leaving
    rules.check_remove(group, 1, OWNER, 2, MEMBER)
    rules.check_remove(group, 1, ADMIN, 2, ADMIN)
    with pytest.raises(Forbidden, match="owner or an admin"):
        rules.check_remove(group, 1, MEMBER, 2, MEMBER)
    with pytest.raises(Forbidden) as refused:
        rules.check_remove(group, 1, ADMIN, 2, OWNER)
    assert refused.value.code == "cannot_remove_owner"
    with pytest.raises(Invalid):
        rules.check_remove(single, 1, OWNER, 1, OWNER)


@pytest.mark.parametrize("kind", ALL)
def test_only_public_channels_are_joined(kind: ChatType) -> None:
    if kind is ChatType.PUBLIC_CHANNEL:
        rules.check_join(kind, is_member=False)
        rules.check_join(kind, is_member=True)
        return
    with pytest.raises(NotFound):
        rules.check_join(kind, is_member=False)
    with pytest.raises(Invalid):
        rules.check_join(kind, is_member=True)


def test_who_may_update_and_delete() -> None:
    rules.check_update(ChatType.GROUP, ADMIN, "new")
    rules.check_update(ChatType.SINGLE, OWNER, None)
    with pytest.raises(Invalid):
        rules.check_update(ChatType.SINGLE, OWNER, "a name")
    with pytest.raises(Forbidden):
        rules.check_update(ChatType.GROUP, MEMBER, "new")
    rules.check_delete(OWNER)
    for role in (ADMIN, MEMBER):
        with pytest.raises(Forbidden):
            rules.check_delete(role)


def test_who_may_set_roles() -> None:
    group = ChatType.GROUP
    rules.check_set_role(group, OWNER, MEMBER, ADMIN)
    rules.check_set_role(ChatType.PUBLIC_CHANNEL, OWNER, ADMIN, MEMBER)
    rules.check_set_role(group, OWNER, ADMIN, ADMIN)  # the same role again is allowed
    for by_role in (ADMIN, MEMBER):
        with pytest.raises(Forbidden) as refused:
            rules.check_set_role(group, by_role, MEMBER, ADMIN)
        assert refused.value.code == "forbidden"
    cases: list[tuple[ChatType, Role | None, Role, str]] = [
        (group, MEMBER, OWNER, "role"),
        (ChatType.SINGLE, MEMBER, ADMIN, "role"),
        (group, OWNER, MEMBER, "user_id"),
    ]
    for kind, target, role, field in cases:
        with pytest.raises(Invalid) as invalid:
            rules.check_set_role(kind, OWNER, target, role)
        assert [e.field for e in invalid.value.errors] == [field]
    with pytest.raises(NotFound) as missing:
        rules.check_set_role(group, OWNER, None, ADMIN)
    assert missing.value.code == "member_not_found"


def test_successor_is_the_oldest_admin_else_the_oldest_member() -> None:
    joined = {1: "2026-01-03", 2: "2026-01-01", 3: "2026-01-02", 4: "2026-01-01"}
    assert rules.successor({2: MEMBER, 3: ADMIN, 1: ADMIN}, joined) == 3
    assert rules.successor({1: MEMBER, 2: MEMBER, 4: MEMBER}, joined) == 2  # tie: lower id
    assert rules.successor({9: MEMBER}, {}) == 9


MESSAGE = Message(7, 3, 1, 2, "hi", ("/files/1/a.png",), None, "c-1", "2026-01-01T00:00:00Z", None)
COMMANDS: list[Command[object]] = [
    SendMessage(NewMessage(2, "hi", ("/files/1/a.png",), None, "c-1")),
    AddMembers(1, (2, 3)),
    ReopenSingle(1, (1, 2)),
    RemoveMember(1, 2, force=True),
    Join(4),
    MarkRead(1, 7),
    Typing(1),
    UpdateChat(1, "name", None),
    DeleteChat(1, already_deleted=True),
    React(1, 7, "👍", add=True),
    SetMemberRole(1, 2, Role.ADMIN),
]
REPLIES: list[object] = [
    SendResult(MESSAGE, created=True),
    (Member(2, 3, Role.MEMBER, "2026-01-01T00:00:00Z", "Bo"),),
]
ERRORS: list[FechatterError] = [
    Invalid("content: bad", code="invalid_text", errors=[FieldError("content", "bad")]),
    Unavailable("busy", retry_after=3),
    RateLimited("slow down", retry_after=2.5),
    Unauthorized("nope", code="token_revoked"),
]


@pytest.mark.parametrize("value", COMMANDS + REPLIES, ids=lambda v: type(v).__name__)
def test_commands_and_replies_are_plain_data(value: object) -> None:
    """What a cluster will forward between processes survives a round trip unchanged."""
    assert pickle.loads(pickle.dumps(value)) == value


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_survive_a_round_trip(error: FechatterError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (copy.problem(), copy.headers, str(copy)) == (
        error.problem(),
        error.headers,
        str(error),
    )
