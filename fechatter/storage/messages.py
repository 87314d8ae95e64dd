"""Operations on messages and read markers — both backends (``Op``s, see ``sql.py``).

``insert_messages`` (one group commit: the batch with gapless ``seq``, the senders' read
markers, the chat's last message) is the one operation with a body per dialect, because on
PostgreSQL it is a single round trip (``INSERT_BATCH_POSTGRES``): one prepared call of a
PL/pgSQL function that takes the chat row lock, then runs one statement whose CTEs classify
the batch, insert it from ``unnest`` arrays and move the marker and the chat. SQLite runs
the same rules as a loop of local statements on its writer thread (a statement there costs
microseconds, not a network round trip). Both
report their outcome through ``_outcomes``. Rules of a batch, in order, per item: a
``(sender, client_id)`` already stored → that message (``created=False``); the same key earlier
in this batch → the message made for it; a ``reply_to`` that is not a message of this chat →
``REPLY_TO_ERROR``; a ``thread_id`` that is not a non-deleted top-level message of this chat →
``THREAD_ERROR`` (field ``thread_id``); otherwise a new message numbered ``last seq + 1``. A
thread reply adds one to its root's ``reply_count`` and sets its ``last_reply_at`` to the
batch's time, in the same transaction. A retried key answers with the stored message as it is
now (edited, or a tombstone), without its reactions: the write is one statement on PostgreSQL
(it commits alone, in autocommit, so nothing may run after it in the same operation), and
``SqlStorage.insert_messages`` reads the reactions of retried live messages after the commit
(``retried_live``, ``reactions.with_reactions``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fechatter.errors import Invalid, NotFound
from fechatter.models import (
    Deleted,
    Inserted,
    Message,
    MessagePage,
    MessageWindow,
    NewMessage,
    utc_now,
)
from fechatter.search_text import search_text
from fechatter.storage.reactions import with_reactions
from fechatter.storage.rows import MESSAGE_COLUMNS, to_message, unqualified
from fechatter.storage.sql import Dialect, Op, Row, Sql, Stmt, dynamic, first, only, q

REPLY_TO_ERROR = "must be a message of this chat"
THREAD_ERROR = "must be a message of this chat that is not deleted nor a thread reply"
_ERRORS = {"reply_to": REPLY_TO_ERROR, "thread_id": THREAD_ERROR}

# -- SQLite: local statements in a loop ----------------------------------------------------
_CHAT_EXISTS = Sql("SELECT 1 AS found FROM chats WHERE id = ?")
_LAST_SEQ = Sql("SELECT COALESCE(MAX(seq), 0) AS seq FROM messages WHERE chat_id = ?")
_BY_CLIENT_ID = Sql(
    f"SELECT {MESSAGE_COLUMNS} FROM messages m"
    " WHERE m.chat_id = ? AND m.sender_id = ? AND m.client_id = ?"
)
_REPLY_TARGET = Sql("SELECT 1 AS found FROM messages WHERE id = ? AND chat_id = ?")
_LIVE_ROOT = Sql(
    "SELECT 1 AS found FROM messages"
    " WHERE id = ? AND chat_id = ? AND deleted = ? AND thread_id IS NULL"
)
_INSERT_ONE = Sql(
    "INSERT INTO messages (chat_id, seq, sender_id, content, files, reply_to, client_id,"
    " thread_id, mentions, mentions_channel, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
# The search index row of a new message (SQLite, migration 0007): written here rather than by a
# trigger so the shadow text is computed before the statement, on the writer thread that holds
# the GIL anyway, not in a SQL-function callback that must take the GIL back mid-statement
# (for each message, while the trio thread wants it). Edits and tombstones use triggers.
_INDEX_ONE = Sql("INSERT INTO messages_fts (rowid, body) VALUES (?, ?)")
_COUNT_REPLY = Sql(
    "UPDATE messages SET reply_count = reply_count + 1, last_reply_at = ?"
    " WHERE id = ? AND deleted = ?"
)
_MOVE_MARKER = Sql(
    "UPDATE chat_members SET last_read_seq = ?, last_read_message_id = ?"
    " WHERE chat_id = ? AND user_id = ? AND last_read_seq < ?"
)
_SET_LAST = Sql("UPDATE chats SET last_message_id = ?, last_activity_at = ? WHERE id = ?")


def _new_message(chat_id: int, seq: int, id: int, item: NewMessage, now: str) -> Message:
    return Message(
        id=id,
        chat_id=chat_id,
        seq=seq,
        sender_id=item.sender_id,
        content=item.content,
        files=item.files,
        reply_to=item.reply_to,
        client_id=item.client_id,
        created_at=now,
        edited_at=None,
        thread_id=item.thread_id,
        mentions=item.mentions,
        mentions_channel=item.mentions_channel,
    )


def _outcomes(results: list[Inserted]) -> tuple[list[Inserted], int]:
    return results, sum(1 for r in results if r.created)


def _rejected(field: str) -> Inserted:
    return Inserted(None, created=False, error=_ERRORS[field], error_field=field)


def retried_live(results: Sequence[Inserted]) -> list[Message]:
    """The live messages that ``client_id`` retries answer with (``created=False``): the ones
    whose reactions ``SqlStorage.insert_messages`` reads after the commit."""
    found = (r.message for r in results if not r.created)
    return [m for m in found if m is not None and not m.deleted]


def _insert_batch_sqlite(
    chat_id: int, batch: Sequence[NewMessage]
) -> Op[tuple[list[Inserted], int]]:
    if first((yield q(_CHAT_EXISTS, (chat_id,)))) is None:
        raise NotFound("chat not found")
    seq: int = only((yield q(_LAST_SEQ, (chat_id,))))["seq"]
    now = utc_now()
    results: list[Inserted] = []
    read_up_to: dict[int, Message] = {}
    for item in batch:
        if item.client_id is not None:
            # Also finds a duplicate inserted earlier in this batch: same transaction.
            row = first((yield q(_BY_CLIENT_ID, (chat_id, item.sender_id, item.client_id))))
            if row is not None:
                results.append(Inserted(to_message(row), created=False))
                continue
        if (
            item.reply_to is not None
            and first((yield q(_REPLY_TARGET, (item.reply_to, chat_id)))) is None
        ):
            results.append(_rejected("reply_to"))
            continue
        if (
            item.thread_id is not None
            and first((yield q(_LIVE_ROOT, (item.thread_id, chat_id, False)))) is None
        ):
            results.append(_rejected("thread_id"))
            continue
        seq += 1
        values = (chat_id, seq, item.sender_id, item.content, list(item.files), item.reply_to)
        extra = (item.client_id, item.thread_id, list(item.mentions), item.mentions_channel)
        row = only((yield q(_INSERT_ONE, (*values, *extra, now))))
        yield q(_INDEX_ONE, (row["id"], search_text(item.content)))
        message = _new_message(chat_id, seq, row["id"], item, now)
        results.append(Inserted(message, created=True))
        read_up_to[item.sender_id] = message
        if item.thread_id is not None:
            yield q(_COUNT_REPLY, (now, item.thread_id, False))
    if read_up_to:
        markers = [(m.seq, m.id, chat_id, uid, m.seq) for uid, m in read_up_to.items()]
        yield Stmt(_MOVE_MARKER, markers, many=True)
        last = max(read_up_to.values(), key=lambda m: m.seq)
        yield q(_SET_LAST, (last.id, now, chat_id))
    return _outcomes(results)


# -- PostgreSQL: one round trip ------------------------------------------------------------
# The item arrays every group-commit function takes after its own leading arguments, in the
# order of _item_arrays (plus the commit time).
_ITEM_ARRAYS = (
    "CAST(:senders AS bigint[]), CAST(:contents AS text[]), CAST(:files AS text[]),"
    " CAST(:replies AS bigint[]), CAST(:clients AS text[]), CAST(:threads AS bigint[]),"
    " CAST(:mentions AS text[]), CAST(:channel AS boolean[]), CAST(:now AS timestamptz)"
)


def _batch_call(sqlite: str, function: str, head: str) -> Sql:
    """``SELECT * FROM function(head, <item arrays>)`` on PostgreSQL; ``sqlite`` is a
    placeholder that is never run (SQLite stores batches in ``_insert_batch_sqlite``)."""
    return Sql.split(sqlite=sqlite, postgres=f"SELECT * FROM {function}({head}, {_ITEM_ARRAYS})")


# One prepared call of a PL/pgSQL function (migration 0003_insert_batch_function.sql, with
# threads and mentions since 0006_insert_batch_threads.sql, locking the thread roots since
# 0007_lock_thread_roots.sql, planned once per connection since
# 0018_insert_batch_generic_plan.sql, docs/storage.md "Planning the group commit"): it takes
# the chat row lock, so every writer of this chat, in
# any process, waits there, then the rows of the roots the batch names (so a concurrent
# deletion of a root either waits for the batch or is seen by it), then numbers the batch from
# chats.last_seq and stores the new value; UNIQUE (chat_id, seq) is the backstop. Its rows:
# one per batch item, in order, with the stored message an existing key names (e_*), or the
# new message the item maps to (new_*: itself, or the first item of its key), or neither
# (bad_field names the rejected reply_to or thread_id); none at all for an unknown chat. A
# function rather than a two-statement query: its plans are cached per connection and its
# arrays bound server-side (a multi-statement query must be bound on the client and is
# planned per call).
INSERT_BATCH_POSTGRES = _batch_call(
    "SELECT NULL",  # never run: SQLite uses _insert_batch_sqlite
    "fechatter_insert_batch",
    ":chat",
)


# The same call behind the chat's fence (migration 0008): fechatter_fence first, in the same
# function call, so a fenced send is still one round trip and one statement in autocommit.
INSERT_BATCH_FENCED = _batch_call(
    "SELECT NULL",  # never run: a fence needs PostgreSQL
    "fechatter_insert_batch_fenced",
    ":node, :epoch, :chat",
)

# With the chat's outbox rows (migration 0009): optionally fenced (NULL node: not fenced),
# still one call. Its rows carry ev_base: the chat's last_event_seq before this commit.
INSERT_BATCH_OUTBOX = _batch_call(
    "SELECT NULL",  # never run: the outbox needs PostgreSQL
    "fechatter_insert_batch_outbox",
    "CAST(:node AS text), CAST(:epoch AS bigint), :chat",
)

# A chat write's fence: (owner node id, lease epoch); None: not fenced (one process).
FenceArgs = tuple[str, int]


def _insert_batch_postgres(
    chat_id: int,
    batch: Sequence[NewMessage],
    fence: FenceArgs | None = None,
    bases: dict[int, int] | None = None,
) -> Op[tuple[list[Inserted], int]]:
    now = utc_now()
    params: dict[str, Any] = {"chat": chat_id, "now": now, **_item_arrays(batch)}
    if bases is not None:
        params["node"], params["epoch"] = fence if fence is not None else (None, None)
        result = yield q(INSERT_BATCH_OUTBOX, params)
        if result.rows:
            bases[chat_id] = result.rows[0]["ev_base"]
    elif fence is None:
        result = yield q(INSERT_BATCH_POSTGRES, params)
    else:
        params["node"], params["epoch"] = fence
        result = yield q(INSERT_BATCH_FENCED, params)
    if not result.rows:
        raise NotFound("chat not found")
    return _outcomes(_postgres_outcomes(chat_id, batch, result.rows, now))


def _item_arrays(batch: Sequence[NewMessage]) -> dict[str, list[Any]]:
    return {
        "senders": [m.sender_id for m in batch],
        "contents": [m.content for m in batch],
        # One text[] literal per item: unnest would flatten a two-dimensional array.
        "files": [_text_array(m.files) for m in batch],
        "replies": [m.reply_to for m in batch],
        "clients": [m.client_id for m in batch],
        "threads": [m.thread_id for m in batch],
        "mentions": [_id_array(m.mentions) for m in batch],
        "channel": [m.mentions_channel for m in batch],
    }


def _postgres_outcomes(
    chat_id: int, batch: Sequence[NewMessage], rows: Sequence[Row], now: str
) -> list[Inserted]:
    outcomes: list[Inserted] = []
    for row in rows:
        if row["existing_id"] is not None:
            outcomes.append(Inserted(to_message(row, "e_"), created=False))
        elif row["new_id"] is not None:
            item = batch[row["new_n"] - 1]
            message = _new_message(chat_id, row["new_seq"], row["new_id"], item, now)
            outcomes.append(Inserted(message, created=row["new_n"] == row["n"]))
        else:
            outcomes.append(_rejected(row["bad_field"] or "reply_to"))
    return outcomes


INSERT_ROUNDS_POSTGRES = _batch_call(
    "SELECT NULL",  # never run: SQLite's writer thread batches across chats itself
    "fechatter_insert_rounds",
    "CAST(:chats AS bigint[]), CAST(:counts AS integer[])",
)

INSERT_ROUNDS_FENCED = _batch_call(
    "SELECT NULL",  # never run: a fence needs PostgreSQL
    "fechatter_insert_rounds_fenced",
    "CAST(:nodes AS text[]), CAST(:epochs AS bigint[]), CAST(:chats AS bigint[]),"
    " CAST(:counts AS integer[])",
)

INSERT_ROUNDS_OUTBOX = _batch_call(
    "SELECT NULL",  # never run: the outbox needs PostgreSQL
    "fechatter_insert_rounds_outbox",
    "CAST(:nodes AS text[]), CAST(:epochs AS bigint[]), CAST(:outbox AS boolean[]),"
    " CAST(:chats AS bigint[]), CAST(:counts AS integer[])",
)

RoundOutcome = tuple[list[Inserted], int] | NotFound


def insert_rounds_postgres(
    batches: Sequence[tuple[int, Sequence[NewMessage]]],
    fences: Sequence[FenceArgs | None] | None = None,
    outbox: Sequence[bool] | None = None,
    bases: dict[int, int] | None = None,
) -> Op[list[RoundOutcome]]:
    """The batches of several chats in one call and one transaction (PostgreSQL only).

    ``batches``: (chat id, its batch), chat ids distinct and ascending (the lock order). The
    outcome of each, in order: as ``insert_messages`` returns, or ``NotFound`` for a chat
    that does not exist (that batch alone fails). Any error raised fails the whole call and
    wrote nothing; the caller then stores the batches one by one to isolate it. ``fences``:
    one per batch (None: that batch unfenced); any fence given → ``fechatter_insert_rounds_
    fenced``, whose failed fence (``ChatMoved``, ``NotFound``) fails the whole call like any
    error; all None or no ``fences`` → today's unfenced call. ``outbox``: one flag per
    batch; any True → ``fechatter_insert_rounds_outbox`` (migration 0009), which also writes
    those chats' events, and ``bases`` receives each such chat's ``last_event_seq`` before
    the round (``outbox.send_events`` numbers them from it).
    """
    now = utc_now()
    items = [item for _, batch in batches for item in batch]
    params: dict[str, Any] = {
        "chats": [chat_id for chat_id, _ in batches],
        "counts": [len(batch) for _, batch in batches],
        "now": now,
        **_item_arrays(items),
    }
    if outbox is not None and any(outbox):
        params["outbox"] = list(outbox)
        params["nodes"] = [f[0] if f is not None else None for f in fences or [None] * len(batches)]
        params["epochs"] = [
            f[1] if f is not None else None for f in fences or [None] * len(batches)
        ]
        result = yield q(INSERT_ROUNDS_OUTBOX, params)
        for row in result.rows:
            if row["ev_base"] is not None and bases is not None:
                bases[row["chat"]] = row["ev_base"]
    elif fences is None or all(f is None for f in fences):
        result = yield q(INSERT_ROUNDS_POSTGRES, params)
    else:
        params["nodes"] = [f[0] if f is not None else None for f in fences]
        params["epochs"] = [f[1] if f is not None else None for f in fences]
        result = yield q(INSERT_ROUNDS_FENCED, params)
    by_chat: dict[int, list[Row]] = {}
    for row in result.rows:
        by_chat.setdefault(row["chat"], []).append(row)
    outcomes: list[RoundOutcome] = []
    for chat_id, batch in batches:
        rows = by_chat.get(chat_id)
        if not rows:
            outcomes.append(NotFound("chat not found"))
        else:
            outcomes.append(_outcomes(_postgres_outcomes(chat_id, batch, rows, now)))
    return outcomes


def _id_array(ids: Sequence[int]) -> str:
    """A PostgreSQL ``bigint[]`` literal: ``{1,2}``."""
    return "{" + ",".join(str(int(i)) for i in ids) + "}"


def _text_array(values: Sequence[str]) -> str:
    """A PostgreSQL ``text[]`` literal: ``{"a","b \\"c\\""}``."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def insert_messages(
    dialect: Dialect,
    chat_id: int,
    batch: Sequence[NewMessage],
    fence: FenceArgs | None = None,
    bases: dict[int, int] | None = None,
) -> Op[tuple[list[Inserted], int]]:
    """The outcome of each item, and how many messages were inserted (``NotFound`` chat).

    ``bases`` (PostgreSQL only): not None → the outbox variant (migration 0009) writes the
    batch's events in the same call and ``bases[chat_id]`` gets the chat's
    ``last_event_seq`` before them.

    ``fence`` (PostgreSQL only): (node id, epoch) checked by ``fechatter_fence`` in the same
    call; a failed fence raises the driver error the seam maps to ``ChatMoved`` / ``NotFound``.
    """
    if dialect == "postgres":
        return _insert_batch_postgres(chat_id, batch, fence, bases)
    if fence is not None or bases is not None:
        raise ValueError("a chat fence needs PostgreSQL")
    return _insert_batch_sqlite(chat_id, batch)


# -- reads and markers ---------------------------------------------------------------------
# Every read that returns messages attaches their reactions with one more statement
# (``reactions.with_reactions``); tombstones have none.
_GET_MESSAGE = Sql(f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = ?")
_SEQ_OF = Sql("SELECT seq FROM messages WHERE id = ? AND chat_id = ?")
_SENDER_OF = Sql("SELECT sender_id FROM messages WHERE id = ? AND chat_id = ? AND deleted = ?")
# A thread's root for ``?thread_id=``: a top-level message of the chat, tombstones included
# (a deleted root keeps its thread). Existence only: no columns, no reactions.
_ANY_ROOT = Sql(
    "SELECT 1 AS found FROM messages WHERE id = ? AND chat_id = ? AND thread_id IS NULL"
)
# ``around``: the message and the newer ones (the first row must be it), then the older ones.
_FROM_ON = Sql(
    f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.chat_id = ? AND m.id >= ?"
    " ORDER BY m.id ASC LIMIT ?"
)
_BEFORE = Sql(
    f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.chat_id = ? AND m.id < ?"
    " ORDER BY m.id DESC LIMIT ?"
)


def list_messages(
    chat_id: int,
    limit: int,
    before: int | None,
    after: int | None,
    thread_id: int | None = None,
    top_level: bool = False,
) -> Op[MessagePage]:
    where = ["m.chat_id = ?"]
    values: list[object] = [chat_id]
    if thread_id is not None:
        where.append("m.thread_id = ?")  # index messages_thread (chat_id, thread_id, id)
        values.append(thread_id)
    elif top_level:
        where.append("m.thread_id IS NULL")  # partial index messages_top_level
    if before is not None:
        where.append("m.id < ?")
        values.append(before)
    if after is not None:
        where.append("m.id > ?")
        values.append(after)
    # ``after`` pages forward (oldest first); otherwise pages go backward (newest first).
    order = "ASC" if after is not None else "DESC"
    sql = dynamic(
        f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {' AND '.join(where)}"
        f" ORDER BY m.id {order} LIMIT ?"
    )
    rows = (yield q(sql, (*values, limit + 1))).rows
    items = yield from with_reactions([to_message(r) for r in rows[:limit]])
    return MessagePage(items=items, has_more=len(rows) > limit)


def messages_around(chat_id: int, message_id: int, limit: int) -> Op[MessageWindow]:
    """``limit // 2`` older messages, the message, and the newer rest, oldest first."""
    older_n = limit // 2
    newer_n = limit - older_n  # the message itself included
    newer = (yield q(_FROM_ON, (chat_id, message_id, newer_n + 1))).rows
    if not newer or newer[0]["id"] != message_id:
        raise NotFound("message not found", code="message_not_found")
    older = (yield q(_BEFORE, (chat_id, message_id, older_n + 1))).rows
    rows = [*reversed(older[:older_n]), *newer[:newer_n]]
    items = yield from with_reactions([to_message(r) for r in rows])
    return MessageWindow(
        items=items, has_more_before=len(older) > older_n, has_more_after=len(newer) > newer_n
    )


def get_message(message_id: int) -> Op[Message | None]:
    row = first((yield q(_GET_MESSAGE, (message_id,))))
    if row is None:
        return None
    return (yield from with_reactions([to_message(row)]))[0]


def message_sender(chat_id: int, message_id: int) -> Op[int | None]:
    row = first((yield q(_SENDER_OF, (message_id, chat_id, False))))
    return None if row is None else int(row["sender_id"])


def is_thread_root(chat_id: int, message_id: int) -> Op[bool]:
    return first((yield q(_ANY_ROOT, (message_id, chat_id)))) is not None


# -- edit and delete -----------------------------------------------------------------------
_RETURNING = f"RETURNING {unqualified(MESSAGE_COLUMNS)}"
# One statement: on PostgreSQL a concurrent deletion holds the row, and the WHERE is
# re-checked once it commits, so a tombstone is never edited.
_EDIT = Sql.split(
    sqlite="UPDATE messages SET content = ?, mentions = ?, mentions_channel = ?, edited_at = ?"
    f" WHERE id = ? AND chat_id = ? AND deleted = ? {_RETURNING}",
    postgres="UPDATE messages SET content = ?, mentions = CAST(? AS bigint[]),"
    " mentions_channel = ?, edited_at = CAST(? AS timestamptz)"
    f" WHERE id = ? AND chat_id = ? AND deleted = ? {_RETURNING}",
)
_LOCK_LIVE = Sql(
    "SELECT thread_id FROM messages WHERE id = ? AND chat_id = ? AND deleted = ? FOR UPDATE"
)
_TOMBSTONE = Sql.split(
    sqlite="UPDATE messages SET deleted = 1, content = '', files = '[]', mentions = '[]',"
    f" mentions_channel = 0 WHERE id = ? {_RETURNING}",
    postgres="UPDATE messages SET deleted = true, content = '', files = '{}',"
    f" mentions = '{{}}', mentions_channel = false WHERE id = ? {_RETURNING}",
)
_DROP_REACTIONS = Sql("DELETE FROM message_reactions WHERE message_id = ?")
_LOCK_ROOT = Sql("SELECT id FROM messages WHERE id = ? FOR UPDATE")
# Recount from the replies rather than decrement: idempotent, and right whatever raced.
_RECOUNT_ROOT = Sql(
    "UPDATE messages SET"
    " reply_count = (SELECT COUNT(*) FROM messages r"
    " WHERE r.chat_id = :chat AND r.thread_id = :root AND r.deleted = :no),"
    " last_reply_at = (SELECT MAX(r.created_at) FROM messages r"
    " WHERE r.chat_id = :chat AND r.thread_id = :root AND r.deleted = :no)"
    f" WHERE id = :root {_RETURNING}"
)


def edit_message(
    chat_id: int,
    message_id: int,
    content: str,
    mentions: Sequence[int],
    mentions_channel: bool,
) -> Op[Message]:
    values = (content, list(mentions), mentions_channel, utc_now(), message_id, chat_id, False)
    row = first((yield q(_EDIT, values)))
    if row is None:
        raise NotFound("message not found", code="message_not_found")
    return (yield from with_reactions([to_message(row)]))[0]


def delete_message(chat_id: int, message_id: int) -> Op[Deleted]:
    # FOR UPDATE (PostgreSQL): a concurrent edit, reaction or deletion in another process
    # waits for this one, then finds a tombstone. Lock order: the message, then its root;
    # never the chat row. fechatter_insert_batch (0007) takes the chat row, then the roots,
    # and never a reply: neither waits for a lock the other takes first, so no deadlock.
    live = first((yield q(_LOCK_LIVE, (message_id, chat_id, False))))
    if live is None:
        raise NotFound("message not found", code="message_not_found")
    tombstone = to_message(only((yield q(_TOMBSTONE, (message_id,)))))
    yield q(_DROP_REACTIONS, (message_id,))
    root_id = live["thread_id"]
    if root_id is None:
        return Deleted(tombstone, None)
    # Lock the root first so the recount (a new snapshot on PostgreSQL's READ COMMITTED)
    # sees every reply committed by a writer that held it.
    yield q(_LOCK_ROOT, (root_id,))
    row = only((yield q(_RECOUNT_ROOT, {"chat": chat_id, "root": root_id, "no": False})))
    root = (yield from with_reactions([to_message(row)]))[0]
    return Deleted(tombstone, root)


def mark_read(chat_id: int, user_id: int, message_id: int) -> Op[bool]:
    row = first((yield q(_SEQ_OF, (message_id, chat_id))))
    if row is None:
        raise Invalid.field("message_id", "must be a message of this chat")
    # Only forward: the condition makes a late, older marker a no-op, in any process.
    seq = row["seq"]
    result = yield q(_MOVE_MARKER, (seq, message_id, chat_id, user_id, seq))
    return result.rowcount > 0
