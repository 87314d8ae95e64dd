"""Who may do what in a chat (SPEC §3 "Rules"), as pure functions of roles and chat kinds.

The ChatActor asks these before it writes; they raise the domain error a refused caller
gets and never touch storage, so every rule is tested without a database
(``tests/actors/test_chat_rules_pure.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

from fechatter.errors import Forbidden, Invalid, NotFound
from fechatter.models import ChatType, Role


def check_add(kind: ChatType, by_role: Role) -> None:
    """Adding members: any member of a Group, the owner or an admin elsewhere; never to a
    Single chat (422). Raises ``Invalid`` / ``Forbidden``."""
    if kind is ChatType.SINGLE:
        raise Invalid.field("user_ids", "cannot be added to a Single chat")
    if kind is not ChatType.GROUP and not by_role.manages:
        raise Forbidden("only the chat owner or an admin may add members", code="not_chat_admin")


def check_remove(kind: ChatType, by: int, by_role: Role, user_id: int, user_role: Role) -> None:
    """Removing ``user_id`` (or leaving, when ``by == user_id``): the owner or an admin may
    remove others but never the owner; a Single chat's members cannot change.
    Raises ``Forbidden`` / ``Invalid``."""
    if by != user_id:
        if not by_role.manages:
            raise Forbidden("only the owner or an admin may remove members", code="not_chat_admin")
        if user_role is Role.OWNER:
            raise Forbidden("the owner cannot be removed", code="cannot_remove_owner")
    if kind is ChatType.SINGLE:
        raise Invalid.field("user_id", "cannot be removed: a Single chat's members cannot change")


def check_join(kind: ChatType, is_member: bool) -> None:
    """Only PublicChannels can be joined: a member asking is told so (422), anyone else
    learns nothing (404). Raises ``Invalid`` / ``NotFound``."""
    if kind is not ChatType.PUBLIC_CHANNEL:
        if is_member:
            raise Invalid.field("chat_id", "must be a public channel to join it")
        raise NotFound("chat not found", code="chat_not_found")


def check_update(kind: ChatType, by_role: Role, name: str | None) -> None:
    """Renaming or describing: the owner or an admin; a Single chat has no name.
    Raises ``Forbidden`` / ``Invalid``."""
    if not by_role.manages:
        raise Forbidden("only the chat owner or an admin may do this", code="not_chat_admin")
    if kind is ChatType.SINGLE and name is not None:
        raise Invalid.field("name", "must not be set: a Single chat has no name")


def check_delete(by_role: Role) -> None:
    """Deleting: the owner only. Raises ``Forbidden``."""
    if by_role is not Role.OWNER:
        raise Forbidden("only the chat owner may delete it", code="not_chat_owner")


def check_edit_message(by: int, sender_id: int) -> None:
    """Editing a message: its sender only (SPEC §6). The caller is a member who can read
    the message, so a 403 reveals nothing. Raises ``Forbidden`` (``not_message_sender``)."""
    if by != sender_id:
        raise Forbidden("only its sender may edit a message", code="not_message_sender")


def check_delete_message(by: int, by_role: Role, sender_id: int) -> None:
    """Deleting a message: its sender, or the chat's owner or an admin (SPEC §6).
    Raises ``Forbidden`` (``forbidden``)."""
    if by != sender_id and not by_role.manages:
        raise Forbidden("only its sender or the chat owner or an admin may delete a message")


def successor(remaining: Mapping[int, Role], joined: Mapping[int, str]) -> int:
    """Who becomes owner when the owner leaves: the oldest admin, else the oldest member
    (by ``joined`` time, then id). ``remaining`` must not be empty."""

    def age(uid: int) -> tuple[str, int]:
        return (joined.get(uid, ""), uid)

    admins = [uid for uid, role in remaining.items() if role is Role.ADMIN]
    return min(admins or list(remaining), key=age)


def check_set_role(kind: ChatType, by_role: Role, target_role: Role | None, role: Role) -> None:
    """Changing a member's role (SPEC §6): the owner only (403 ``forbidden``); a Single chat
    has no admins and nobody becomes owner this way (422 ``role``); the target must be a
    member (404 ``member_not_found``) other than the owner, whose role never changes here
    (422 ``user_id``). Raises ``Forbidden`` / ``Invalid`` / ``NotFound``."""
    if by_role is not Role.OWNER:
        raise Forbidden("only the chat owner may change roles", code="forbidden")
    if role is Role.OWNER:
        raise Invalid.field("role", "must be admin or member (ownership is not transferred here)")
    if kind is ChatType.SINGLE:
        raise Invalid.field("role", "cannot be set in a Single chat: it has no admins")
    if target_role is None:
        raise NotFound("not a member of this chat", code="member_not_found")
    if target_role is Role.OWNER:
        raise Invalid.field("user_id", "must not be the owner: the owner's role cannot change")
