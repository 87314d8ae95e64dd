"""The transactional outbox of chat events (issue 12, docs/cluster.md §4, plan step B1).

With ``ChatStore(outbox=True)`` (PostgreSQL only) every chat write inserts the events the
``ChatActor`` publishes for it into ``outbox`` (migration 0009) in the write's own
transaction, numbered gapless per chat from ``chats.last_event_seq``. This module has the
operations (``Op``s, see ``sql.py``); ``cluster.ChatStore`` composes them with the writes.

Payloads are built here from the write's result, exactly as ``fechatter/actors/chat.py``
builds them (``events.dumps`` of the same dict), with two exceptions, both documented in
docs/cluster.md: the group commit's rows are built by its SQL function (same values as
``Message.to_json``, other whitespace), and its thread-root ``message.updated`` rows are
``{"$ref": "message", "id": root, "reply_count": n, "last_reply_at": t}`` (the root as it
was right after the reply = the root read later with those two fields; see ``rehydrate``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fechatter import events
from fechatter.models import Inserted, Message
from fechatter.storage.messages import get_message
from fechatter.storage.sql import Op, Sql, q

# An event to append: (name, data, users to send a membership notice).
NewEvent = tuple[str, dict[str, Any], tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One row of ``outbox`` for a chat: ``event_seq`` (gapless per chat, commit order),
    the event ``name`` (``events.MESSAGE_CREATED`` …), ``data`` (the payload as a dict; a
    ``$ref`` for a group commit's thread-root update) and ``notify`` (user ids)."""

    chat_id: int
    event_seq: int
    name: str
    data: dict[str, Any]
    notify: tuple[int, ...] = ()


# Numbered from the chat's counter in the same statement; the caller's transaction already
# holds the chat row (taken right after the fence: lease row, then chat row), so concurrent
# writers of one chat number in commit order and a rollback leaves no gap. No chat row (it
# was deleted earlier in this transaction): nothing inserted — delete_chat appends first.
_APPEND = Sql(
    "WITH s AS (UPDATE chats SET last_event_seq = last_event_seq + :k WHERE id = :chat"
    " RETURNING last_event_seq)"
    " INSERT INTO outbox (topic, topic_id, event_seq, name, data, notify)"
    " SELECT 'c', :chat, s.last_event_seq - :k + e.k, e.name, CAST(e.data AS json),"
    " CAST(e.notify AS bigint[])"
    " FROM s, unnest(CAST(:names AS text[]), CAST(:datas AS text[]), CAST(:notify AS text[]))"
    " WITH ORDINALITY AS e (name, data, notify, k)"
    " RETURNING event_seq"
)
# A workspace deletion in cluster mode (``ClusterStore.delete_workspace``): each of its chats
# gets ``chat.deleted`` as its next event, numbered like ``_APPEND``, in the deletion's
# transaction and before the chat rows (and their counters) go. The payload is the one
# ``ChatActor._delete`` publishes, ``events.dumps({"id": id})``, byte for byte; ``notify`` =
# the chat's members, so the publisher stores a departure notice for each before it (a
# resume on another node learns from it that the chat was left, docs/cluster.md "C3").
_APPEND_WORKSPACE_DELETED = Sql(
    "WITH s AS (UPDATE chats SET last_event_seq = last_event_seq + 1 WHERE workspace_id = ?"
    " RETURNING id, last_event_seq)"
    " INSERT INTO outbox (topic, topic_id, event_seq, name, data, notify)"
    """ SELECT 'c', s.id, s.last_event_seq, ?, CAST('{"id":' || s.id || '}' AS json),"""
    " COALESCE((SELECT array_agg(m.user_id ORDER BY m.user_id) FROM chat_members m"
    " WHERE m.chat_id = s.id), CAST('{}' AS bigint[])) FROM s"
)
_ROWS = Sql(
    "SELECT event_seq, name, CAST(data AS text) AS data, notify FROM outbox"
    " WHERE topic = 'c' AND topic_id = ? ORDER BY event_seq"
)


def append(chat_id: int, new: Sequence[NewEvent]) -> Op[list[OutboxEvent]]:
    """Insert ``new`` as the chat's next events, in order (one statement; none for an empty
    list). Returns them with their ``event_seq``."""
    if not new:
        return []
    params = {
        "chat": chat_id,
        "k": len(new),
        "names": [name for name, _, _ in new],
        "datas": [events.dumps(data).decode() for _, data, _ in new],
        "notify": ["{" + ",".join(str(int(u)) for u in users) + "}" for _, _, users in new],
    }
    seqs = sorted(row["event_seq"] for row in (yield q(_APPEND, params)).rows)
    return [
        OutboxEvent(chat_id, seq, name, data, tuple(users))
        for seq, (name, data, users) in zip(seqs, new, strict=True)
    ]


def rows(chat_id: int) -> Op[list[OutboxEvent]]:
    """The chat's rows still in the outbox, by ``event_seq`` (payloads as stored)."""
    result = yield q(_ROWS, (chat_id,))
    return [
        OutboxEvent(chat_id, r["event_seq"], r["name"], json.loads(r["data"]), tuple(r["notify"]))
        for r in result.rows
    ]


def send_events(chat_id: int, base: int, results: Sequence[Inserted]) -> list[OutboxEvent]:
    """The events ``fechatter_outbox_sends`` (migration 0009) wrote for a group commit whose
    chat counter was ``base`` before it, rebuilt in Python by the same rule: per message
    created (ascending ``seq``), ``message.created`` then, for a thread reply, its root's
    ``message.updated`` as a ``$ref``. The stored ``$ref`` also carries the root's
    ``reply_count`` right after that reply, which only the database knew: here it is left
    out (the actor publishes the root it reads back, as today; only the leftover path
    rehydrates a stored row)."""
    created = sorted(
        (r.message for r in results if r.created and r.message is not None), key=lambda m: m.seq
    )
    out: list[OutboxEvent] = []
    seq = base
    for message in created:
        seq += 1
        out.append(OutboxEvent(chat_id, seq, events.MESSAGE_CREATED, message.to_json()))
        if message.thread_id is not None:
            seq += 1
            ref = {"$ref": "message", "id": message.thread_id, "last_reply_at": message.created_at}
            out.append(OutboxEvent(chat_id, seq, events.MESSAGE_UPDATED, ref))
    return out


def rehydrate(data: dict[str, Any], message: Message) -> dict[str, Any]:
    """The payload a ``$ref`` row stands for, given the referenced message as read now: its
    ``to_json()`` with the row's ``reply_count`` and ``last_reply_at``. Rows without a
    ``$ref`` are returned as they are."""
    if data.get("$ref") != "message":
        return data
    return {
        **message.to_json(),
        "reply_count": data["reply_count"],
        "last_reply_at": data["last_reply_at"],
    }


# -- the publisher's side (plan step B2, fechatter/cluster/publisher.py) --------------------
@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A row as the publisher sends it: ``payload`` is the event's JSON as bytes (the
    stored text verbatim; a ``$ref`` row rehydrated from the message as it is now)."""

    chat_id: int
    event_seq: int
    name: str
    payload: bytes
    notify: tuple[int, ...] = ()


# One publisher per chat topic at a time, across nodes: a transaction-level advisory lock on
# the topic's key (the same key form as §4's workspace lock, 'w:<id>'); it never blocks the
# chat's writers, and it ends with the publisher's transaction or its connection.
_TRY_LOCK = Sql("SELECT pg_try_advisory_xact_lock(hashtextextended(?, 0)) AS locked")
_BATCH = Sql(
    "SELECT event_seq, name, CAST(data AS text) AS data, notify FROM outbox"
    " WHERE topic = 'c' AND topic_id = ? ORDER BY event_seq LIMIT ?"
)
_REMOVE = Sql("DELETE FROM outbox WHERE topic = 'c' AND topic_id = ? AND event_seq = ANY(?)")
# ``claim_many``: the locks first (MATERIALIZED: each chat's try-lock runs once, before the
# reads), then up to ``lim`` rows per locked chat; a locked chat without rows gives one row
# of NULLs so the caller can tell "locked, empty" from "busy" (absent).
_CLAIM_MANY = Sql(
    "WITH locked AS MATERIALIZED ("
    " SELECT c.chat, c.lim FROM unnest(CAST(? AS bigint[]), CAST(? AS int[])) AS c (chat, lim)"
    " WHERE pg_try_advisory_xact_lock(hashtextextended('c:' || c.chat, 0)))"
    " SELECT l.chat, o.event_seq, o.name, o.data, o.notify FROM locked l"
    " LEFT JOIN LATERAL (SELECT event_seq, name, CAST(data AS text) AS data, notify"
    " FROM outbox WHERE topic = 'c' AND topic_id = l.chat ORDER BY event_seq LIMIT l.lim) o"
    " ON true ORDER BY l.chat, o.event_seq"
)
_REMOVE_MANY = Sql(
    "DELETE FROM outbox o USING unnest(CAST(? AS bigint[]), CAST(? AS bigint[])) AS d (chat, seq)"
    " WHERE o.topic = 'c' AND o.topic_id = d.chat AND o.event_seq = d.seq"
)
_STALE = Sql(
    "SELECT topic_id FROM outbox WHERE topic = 'c'"
    " AND created_at < now() - make_interval(secs => ?) AND topic_id <> ALL(?)"
    " GROUP BY topic_id ORDER BY min(created_at) LIMIT ?"
)


def lock_key(chat_id: int) -> str:
    """The advisory-lock key text of a chat topic (``c:<chat_id>``)."""
    return f"c:{chat_id}"


def claim(chat_id: int, limit: int) -> Op[list[PendingEvent] | None]:
    """Inside the caller's transaction: take the chat's publisher lock and read its first
    ``limit`` rows by ``event_seq``, ``$ref`` rows rehydrated. ``None`` when another
    transaction holds the lock (it is publishing this chat now). A ``$ref`` whose message no
    longer exists (its chat was deleted) is sent as ``chat.deleted`` ``{"id": chat_id}``
    (see ``_pending``): every ``event_seq`` goes out, so receivers see no gap."""
    locked = yield q(_TRY_LOCK, (lock_key(chat_id),))
    if not locked.rows[0]["locked"]:
        return None
    result = yield q(_BATCH, (chat_id, limit))
    out: list[PendingEvent] = []
    for r in result.rows:
        out.append((yield from _pending(chat_id, r)))
    return out


def claim_many(limits: Sequence[tuple[int, int]]) -> Op[dict[int, list[PendingEvent]]]:
    """``claim`` for several chats in one statement: ``limits`` = ``(chat_id, rows)`` pairs
    (distinct chats). Inside the caller's transaction, takes each chat's publisher lock with
    ``pg_try_advisory_xact_lock`` (never waits) and reads the first ``rows`` rows of each
    chat it locked. Returns ``{chat_id: rows by event_seq}`` for the chats locked (an empty
    list: nothing left); a chat missing from it is busy (another transaction holds its
    lock). ``$ref`` rows as in ``claim``; a malformed one raises (``KeyError``, ``ValueError``)."""
    if not limits:
        return {}
    chats = [c for c, _ in limits]
    result = yield q(_CLAIM_MANY, (chats, [n for _, n in limits]))
    out: dict[int, list[PendingEvent]] = {}
    for r in result.rows:
        chat_id = int(r["chat"])
        rows = out.setdefault(chat_id, [])
        if r["event_seq"] is not None:
            rows.append((yield from _pending(chat_id, r)))
    return out


def _pending(chat_id: int, r: Any) -> Op[PendingEvent]:
    """One claimed row as the publisher sends it (``$ref`` rehydrated, see ``claim``)."""
    text: str = r["data"]
    name: str = r["name"]
    data = json.loads(text)
    if isinstance(data, dict) and data.get("$ref") == "message":
        message = yield from get_message(int(data["id"]))
        if message is not None:
            body = events.dumps(rehydrate(data, message))
        else:
            # Messages are tombstoned, never deleted: the root's row is gone only because
            # its chat was deleted (ON DELETE CASCADE), and that deletion appended
            # ``chat.deleted`` to this chat's outbox in its own transaction — committed,
            # so a later row of this batch or the next. The root's counters no longer
            # describe anything; this event_seq announces what is true by now, in the
            # chat's own schema-valid shape, instead of a Message without its fields
            # (every event_seq still goes out: receivers see no gap). Receivers forget
            # the chat at the first ``chat.deleted``; the second one reaches nobody live.
            name = events.CHAT_DELETED
            body = events.dumps({"id": chat_id})
    else:
        body = text.encode()
    return PendingEvent(chat_id, r["event_seq"], name, body, tuple(r["notify"]))


def remove(chat_id: int, seqs: Sequence[int]) -> Op[int]:
    """Delete the chat's rows ``seqs`` (published and acknowledged); how many were there."""
    result = yield q(_REMOVE, (chat_id, list(seqs)))
    return result.rowcount


def remove_many(rows: Sequence[tuple[int, int]]) -> Op[int]:
    """Delete the rows ``(chat_id, event_seq)`` (published and acknowledged), any chats, in
    one statement; how many were there."""
    if not rows:
        return 0
    result = yield q(_REMOVE_MANY, ([c for c, _ in rows], [s for _, s in rows]))
    return result.rowcount


def stale_chats(age: float, limit: int, skip: Sequence[int] = ()) -> Op[list[int]]:
    """Up to ``limit`` chats with rows older than ``age`` seconds (database clock), the
    oldest first, none of ``skip`` (the publisher's quarantined chats, so they take no
    places): the leftovers of a publisher that died or could not publish."""
    result = yield q(_STALE, (age, list(skip), limit))
    return [int(r["topic_id"]) for r in result.rows]


def append_workspace_deleted(workspace_id: int) -> Op[int]:
    """Insert ``chat.deleted`` as the next event of every chat of the workspace (one
    statement). The caller's transaction must hold the chats' lease rows (lock order: lease
    rows, then chat rows) and delete the chats after it. Returns the number of rows."""
    result = yield q(_APPEND_WORKSPACE_DELETED, (workspace_id, events.CHAT_DELETED))
    return result.rowcount
