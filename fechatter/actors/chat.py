"""ChatActor: the one writer of a chat.

It owns the chat's member set and roles (loaded once at start, then changed only here, so
never stale) and its typing state. Every write to the chat — messages, membership, read
markers, settings, deletion — arrives as a command in its bounded mailbox. Sends that queue
up while a commit is running are committed together (group commit: one transaction for all
of them, up to ``group_commit_max``). After a commit it publishes the events, built once, to
the members. It never awaits anything but its mailbox and storage, so a slow client cannot
slow the chat down.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import trio

from fechatter import events
from fechatter.actors import chat_rules as rules
from fechatter.actors.commands import (
    AddMembers,
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
from fechatter.actors.mailbox import Call
from fechatter.errors import ChatMoved, FechatterError, Forbidden, Invalid, NotFound
from fechatter.events import Event, EventSink
from fechatter.mentions import parse_mentions
from fechatter.models import (
    Chat,
    ChatRecord,
    ChatState,
    ChatType,
    Member,
    Message,
    NewMessage,
    Role,
)
from fechatter.storage import Storage
from fechatter.storage.cluster import ChatStore

# Where a ChatActor writes: the Storage itself (one process) or, in a cluster, its chat's
# fenced ``ChatStore`` (docs/cluster.md §2): same methods, and a write of a node that lost the
# chat raises ``ChatMoved`` having written nothing.
ChatWrites = Storage | ChatStore

log = logging.getLogger(__name__)


class ChatRetired(Exception):
    """Raised inside the actor when the chat is gone; the actor stops."""


class ChatActor:
    """State and behaviour of one chat; ``Directory`` runs and supervises it."""

    def __init__(
        self,
        state: ChatState,
        storage: Storage,
        sink: EventSink,
        *,
        group_commit_max: int,
        typing_ttl: float,
        max_reactions: int = 50,
        writes: ChatWrites | None = None,
        lease_recheck: float = 2.0,
    ) -> None:
        """``storage`` serves the reads; ``writes`` (default: ``storage``) takes the chat's
        writes. A ``ChatMoved`` from a write fails the calls it carried and propagates: the
        actor must stop (without restart), nothing was written and nothing is published.
        ``lease_recheck`` (seconds, fenced ``writes`` only): a typing command, which never
        writes and so never meets the fence, first re-reads the lease when the fence was
        last confirmed longer ago than this (``ChatStore.confirm_lease``)."""
        self.chat: ChatRecord = state.chat
        self.members: dict[int, Role] = dict(state.members)
        self.joined: dict[int, str] = dict(state.joined)
        self._storage = storage
        self._writes: ChatWrites = storage if writes is None else writes
        self._sink = sink
        self._group_commit_max = group_commit_max
        self._typing_ttl = typing_ttl
        self._max_reactions = max_reactions  # distinct emoji per message
        self._lease_recheck = lease_recheck
        self._typing_until: dict[int, float] = {}
        # Calls taken from the mailbox and not yet answered; failed by the supervisor on crash.
        self.inflight: list[Call[Any]] = []

    @property
    def id(self) -> int:
        return self.chat.id

    async def handle_batch(self, calls: Sequence[Call[Any]]) -> None:
        """Process calls in mailbox order; consecutive sends share one commit."""
        self.inflight = list(calls)
        sends: list[Call[Any]] = []
        for call in calls:
            if isinstance(call.command, SendMessage):
                sends.append(call)
                if len(sends) >= self._group_commit_max:
                    await self._commit_sends(sends)
                    sends = []
                continue
            if sends:
                await self._commit_sends(sends)
                sends = []
            await self._handle_one(call)
        if sends:
            await self._commit_sends(sends)
        self.inflight = []

    # -- sends (group commit) ----------------------------------------------------------
    async def _commit_sends(self, calls: list[Call[Any]]) -> None:
        accepted: list[Call[Any]] = []
        for call in calls:
            error = await self._check_member(_send_of(call).message.sender_id)
            if error is not None:
                call.fail(error)
            else:
                accepted.append(call)
        if not accepted:
            return
        batch = [self._with_mentions(_send_of(c).message) for c in accepted]
        try:
            results = await self._writes.insert_messages(self.chat.id, batch)
        except Invalid as exc:
            # Storage refused the data of a send (text the driver cannot store, which the edge
            # should have stopped) and wrote nothing. Isolate it: a batch of one fails alone; a
            # larger batch is retried one send at a time, so honest sends still commit.
            if len(accepted) == 1:
                accepted[0].fail(exc)
                return
            for call in accepted:
                await self._commit_sends([call])
            return
        except ChatMoved as exc:
            for call in accepted:
                call.fail(exc)
            raise
        except FechatterError as exc:
            for call in accepted:
                call.fail(exc)
            return
        # Replies of this commit still to publish, per root: the root read back holds them all.
        pending = Counter(
            r.message.thread_id
            for r in results
            if r.created and r.message is not None and r.message.thread_id is not None
        )
        roots = await self._thread_roots(sorted(pending))
        recipients = tuple(self.members)
        for call, result in zip(accepted, results, strict=True):
            if result.message is None:
                call.fail(Invalid.field(result.error_field, result.error or "is invalid"))
                continue
            call.resolve(SendResult(result.message, result.created))
            if result.created:
                message = result.message
                self._typing_until.pop(message.sender_id, None)
                self._publish(recipients, events.MESSAGE_CREATED, message.to_json())
                if message.thread_id is not None:
                    pending[message.thread_id] -= 1
                    root = roots.get(message.thread_id)
                    if root is not None:
                        # The root as it was right after this reply, in the chat's order.
                        state = replace(
                            root,
                            reply_count=root.reply_count - pending[message.thread_id],
                            last_reply_at=message.created_at,
                        )
                        self._publish(recipients, events.MESSAGE_UPDATED, state.to_json())

    def _with_mentions(self, message: NewMessage) -> NewMessage:
        """The send with the members it mentions (SPEC §6); tokens of others stay text."""
        ids, channel = parse_mentions(message.content, self.members)
        return replace(message, mentions=ids, mentions_channel=channel)

    async def _thread_roots(self, root_ids: Sequence[int]) -> dict[int, Message]:
        """The thread roots replies of this commit changed, read back once each (after the
        commit: the actor is the chat's one writer, so this is their state after the batch).

        A failed read is logged and leaves that root out: the replies are committed and
        answered; the root's counters are right in any later read of it.
        """
        roots: dict[int, Message] = {}
        for root_id in root_ids:
            try:
                root = await self._storage.get_message(root_id)
            except FechatterError:
                log.warning("chat %s: thread root %s not read back", self.chat.id, root_id)
                continue
            if root is not None:
                roots[root_id] = root
        return roots

    # -- everything else ---------------------------------------------------------------
    async def _handle_one(self, call: Call[Any]) -> None:
        handler = self._handlers.get(type(call.command))
        if handler is None:  # pragma: no cover - a programming error
            raise TypeError(f"unknown chat command {call.command!r}")
        try:
            call.resolve(await handler(self, call.command))
        except ChatMoved as exc:
            call.fail(exc)
            raise
        except FechatterError as exc:
            call.fail(exc)
        except ChatRetired:
            call.resolve(None)
            raise

    async def _check_member(self, user_id: int) -> FechatterError | None:
        """None for a member; else the error that reveals no more than the caller may know:
        a public channel exists for its workspace's members (403), anything else is a 404."""
        if user_id in self.members:
            return None
        if self.chat.type is ChatType.PUBLIC_CHANNEL and (
            await self._storage.workspace_role(self.chat.workspace_id, user_id) is not None
        ):
            return Forbidden("join the channel first", code="not_a_member")
        return NotFound("chat not found", code="chat_not_found")

    async def _require_member(self, user_id: int) -> Role:
        error = await self._check_member(user_id)
        if error is not None:
            raise error
        return self.members[user_id]

    async def _add_members(self, cmd: AddMembers) -> tuple[Member, ...]:
        rules.check_add(self.chat.type, await self._require_member(cmd.by))
        new_ids = [uid for uid in dict.fromkeys(cmd.user_ids) if uid not in self.members]
        return tuple(await self._admit(new_ids, by=cmd.by)) if new_ids else ()

    async def _reopen_single(self, cmd: ReopenSingle) -> None:
        if self.chat.type is not ChatType.SINGLE or cmd.by not in cmd.user_ids:
            raise NotFound("chat not found", code="chat_not_found")  # pragma: no cover
        missing = [uid for uid in cmd.user_ids if uid not in self.members]
        if missing:
            await self._admit(missing, by=cmd.by)

    async def _admit(self, user_ids: list[int], *, by: int) -> list[Member]:
        """Add users (not yet members) as members and tell everyone, the added included."""
        if isinstance(self._writes, ChatStore):  # the outbox event names who added them
            added = await self._writes.add_chat_members(self.chat.id, user_ids, Role.MEMBER, by=by)
        else:
            added = await self._writes.add_chat_members(self.chat.id, user_ids, Role.MEMBER)
        for m in added:
            self.members[m.user_id] = m.role
            self.joined[m.user_id] = m.joined_at
        if added:
            data = {"chat_id": self.chat.id, "user_ids": [m.user_id for m in added], "by": by}
            self._publish(tuple(self.members), events.MEMBER_ADDED, data)
        return added

    async def _join(self, cmd: Join) -> Member:
        rules.check_join(self.chat.type, cmd.user_id in self.members)
        if cmd.user_id not in self.members:
            added = await self._admit([cmd.user_id], by=cmd.user_id)
            if added:
                return added[0]
        # Joining twice answers with the existing membership.
        for m in await self._storage.list_chat_members(self.chat.id):
            if m.user_id == cmd.user_id:
                return m
        raise NotFound("chat not found", code="chat_not_found")  # pragma: no cover

    async def _remove_member(self, cmd: RemoveMember) -> None:
        if cmd.user_id not in self.members:
            if not cmd.force:
                await self._require_member(cmd.by)
            raise NotFound("not a member of this chat", code="member_not_found")
        if not cmd.force:
            by_role = await self._require_member(cmd.by)
            rules.check_remove(
                self.chat.type, cmd.by, by_role, cmd.user_id, self.members[cmd.user_id]
            )
        remaining = {uid: r for uid, r in self.members.items() if uid != cmd.user_id}
        if not remaining:
            if isinstance(self._writes, ChatStore):  # a departure notice for the last member
                await self._writes.delete_chat(self.chat.id, notify=(cmd.user_id,))
            else:
                await self._writes.delete_chat(self.chat.id)
            self._publish((cmd.user_id,), events.CHAT_DELETED, {"id": self.chat.id})
            raise ChatRetired
        new_owner = None
        if self.members[cmd.user_id] is Role.OWNER:
            new_owner = rules.successor(remaining, self.joined)
        if isinstance(self._writes, ChatStore):
            await self._writes.remove_chat_member(self.chat.id, cmd.user_id, new_owner, by=cmd.by)
        else:
            await self._writes.remove_chat_member(self.chat.id, cmd.user_id, new_owner)
        recipients = tuple(self.members)
        del self.members[cmd.user_id]
        self.joined.pop(cmd.user_id, None)
        self._typing_until.pop(cmd.user_id, None)
        if new_owner is not None:
            self.members[new_owner] = Role.OWNER
            self.chat = _with_owner(self.chat, new_owner)
        data = {"chat_id": self.chat.id, "user_id": cmd.user_id, "by": cmd.by}
        self._publish(recipients, events.MEMBER_REMOVED, data)

    async def _mark_read(self, cmd: MarkRead) -> None:
        await self._require_member(cmd.user_id)
        if await self._writes.mark_read(self.chat.id, cmd.user_id, cmd.message_id):
            data = {"chat_id": self.chat.id, "user_id": cmd.user_id, "message_id": cmd.message_id}
            self._publish(tuple(self.members), events.READ, data)

    async def _typing(self, cmd: Typing) -> None:
        if isinstance(self._writes, ChatStore):
            # Typing never writes: confirm the lease here, or a stale actor (the chat taken
            # over) would answer from its stale members and never idle out. ChatMoved retires
            # the actor and the router retries the call at the owner.
            await self._writes.confirm_lease(self._lease_recheck)
        await self._require_member(cmd.user_id)
        now = trio.current_time()
        # Coalesce: while the last typing event is fresh (half the TTL), don't repeat it.
        if self._typing_until.get(cmd.user_id, 0.0) - self._typing_ttl / 2 > now:
            return
        self._typing_until[cmd.user_id] = now + self._typing_ttl
        others = tuple(uid for uid in self.members if uid != cmd.user_id)
        self._publish(others, events.TYPING, {"chat_id": self.chat.id, "user_id": cmd.user_id})

    async def _update(self, cmd: UpdateChat) -> Chat:
        rules.check_update(self.chat.type, await self._require_member(cmd.by), cmd.name)
        changed = cmd.name is not None or cmd.description is not None
        if changed:
            if isinstance(self._writes, ChatStore):
                self.chat = await self._writes.update_chat(
                    self.chat.id, name=cmd.name, description=cmd.description, by=cmd.by
                )
            else:
                self.chat = await self._writes.update_chat(
                    self.chat.id, name=cmd.name, description=cmd.description
                )
        view = await self._storage.get_chat_view(self.chat.id, cmd.by)
        if view is None:  # pragma: no cover - the actor retires before its chat is gone
            raise NotFound("chat not found", code="chat_not_found")
        if changed:
            self._publish(tuple(self.members), events.CHAT_UPDATED, view.to_event_json())
        return view

    async def _delete(self, cmd: DeleteChat) -> None:
        if not cmd.already_deleted:
            rules.check_delete(await self._require_member(cmd.by))
            if isinstance(self._writes, ChatStore):  # departure notices for the members
                await self._writes.delete_chat(self.chat.id, notify=tuple(self.members))
            else:
                await self._writes.delete_chat(self.chat.id)
        self._publish(tuple(self.members), events.CHAT_DELETED, {"id": self.chat.id})
        raise ChatRetired

    async def _react(self, cmd: React) -> None:
        await self._require_member(cmd.user_id)
        if cmd.add:
            changed = await self._writes.add_reaction(
                self.chat.id, cmd.message_id, cmd.user_id, cmd.emoji, self._max_reactions
            )
        else:
            changed = await self._writes.remove_reaction(
                self.chat.id, cmd.message_id, cmd.user_id, cmd.emoji
            )
        if changed:  # idempotent: a repeat changes nothing and tells nobody
            name = events.REACTION_ADDED if cmd.add else events.REACTION_REMOVED
            data = {
                "chat_id": self.chat.id,
                "message_id": cmd.message_id,
                "emoji": cmd.emoji,
                "user_id": cmd.user_id,
            }
            self._publish(tuple(self.members), name, data)

    async def _set_role(self, cmd: SetMemberRole) -> Member:
        by_role = await self._require_member(cmd.by)
        before = self.members.get(cmd.user_id)
        rules.check_set_role(self.chat.type, by_role, before, cmd.role)
        if isinstance(self._writes, ChatStore):
            member = await self._writes.set_chat_member_role(
                self.chat.id, cmd.user_id, cmd.role, by=cmd.by
            )
        else:
            member = await self._writes.set_chat_member_role(self.chat.id, cmd.user_id, cmd.role)
        self.members[cmd.user_id] = member.role
        if member.role is not before:
            data = {
                "chat_id": self.chat.id,
                "user_id": cmd.user_id,
                "role": member.role.value,
                "by": cmd.by,
            }
            self._publish(tuple(self.members), events.MEMBER_UPDATED, data)
        return member

    # -- edits and deletions (SPEC §6) ----------------------------------------------------
    async def _sender_of(self, message_id: int) -> int:
        """The sender of a live message of this chat; ``NotFound`` for an absent, foreign or
        deleted one."""
        sender = await self._storage.message_sender(self.chat.id, message_id)
        if sender is None:
            raise NotFound("message not found", code="message_not_found")
        return sender

    async def _edit_message(self, cmd: EditMessage) -> Message:
        await self._require_member(cmd.by)  # outsiders learn nothing about the message
        rules.check_edit_message(cmd.by, await self._sender_of(cmd.message_id))
        mentions, channel = parse_mentions(cmd.content, self.members)
        message = await self._writes.edit_message(
            self.chat.id, cmd.message_id, cmd.content, mentions, channel
        )
        self._publish(tuple(self.members), events.MESSAGE_UPDATED, message.to_json())
        return message

    async def _delete_message(self, cmd: DeleteMessage) -> None:
        role = await self._require_member(cmd.by)
        rules.check_delete_message(cmd.by, role, await self._sender_of(cmd.message_id))
        outcome = await self._writes.delete_message(self.chat.id, cmd.message_id)
        t = outcome.tombstone
        recipients = tuple(self.members)
        self._publish(
            recipients, events.MESSAGE_DELETED, {"id": t.id, "chat_id": t.chat_id, "seq": t.seq}
        )
        if outcome.root is not None:  # a reply: its root's counters changed
            self._publish(recipients, events.MESSAGE_UPDATED, outcome.root.to_json())

    _handlers: dict[type, Callable[[ChatActor, Any], Any]] = {  # noqa: RUF012
        AddMembers: _add_members,
        ReopenSingle: _reopen_single,
        RemoveMember: _remove_member,
        Join: _join,
        MarkRead: _mark_read,
        Typing: _typing,
        UpdateChat: _update,
        DeleteChat: _delete,
        React: _react,
        SetMemberRole: _set_role,
        EditMessage: _edit_message,
        DeleteMessage: _delete_message,
    }

    def _publish(self, user_ids: Sequence[int], name: str, data: dict[str, Any]) -> None:
        event = Event(name, data, chat_id=self.chat.id)
        if name != events.TYPING:  # every other publish here follows its write (fan-out timing)
            event.committed = time.time()
        self._sink.publish(user_ids, event)


def _send_of(call: Call[Any]) -> SendMessage:
    command = call.command
    assert isinstance(command, SendMessage)
    return command


def _with_owner(chat: ChatRecord, owner_id: int) -> ChatRecord:
    return replace(chat, owner_id=owner_id)
