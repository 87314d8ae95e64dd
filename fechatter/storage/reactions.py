"""Operations on reactions — both backends (``Op``s, see ``sql.py``).

Reactions are rows of ``message_reactions`` (migration ``0003``/``0005``): one per (message,
emoji, user). ``load_reactions`` reads them as ``Reaction`` records (count and first user
ids, aggregated by the database) for any set of messages in one statement, which every read
of messages uses. Emoji arrive canonical (``fechatter.reaction_emoji``); this module only
stores and counts them. (Chat roles are member operations: ``chats.py``.)
"""

from __future__ import annotations

from collections.abc import Sequence

from fechatter.errors import Invalid, NotFound
from fechatter.models import REACTION_USER_IDS, Message, Reaction, utc_now
from fechatter.storage.sql import Op, Sql, first, q

# Aggregated in SQL: per (message, emoji) the reaction count and only the first
# REACTION_USER_IDS reactions (one row each, its user), never every row of a popular message.
# Order: messages' emoji by first appearance (the emoji's smallest id), each emoji's users in
# the order they reacted (the id). Window functions: SQLite >= 3.25 and PostgreSQL. Plans
# (EXPLAIN, both backends): the rows come from UNIQUE (message_id, emoji, user_id) (covering
# on SQLite, where id is the rowid), already in partition order, so only each (message,
# emoji) group is sorted by id (PostgreSQL: an incremental sort). No index of its own: one on
# (message_id, emoji, id) saves that small sort on PostgreSQL (SQLite does not use it) and
# costs every reaction write one more index.
_REACTIONS_OF = Sql(
    "SELECT message_id, emoji, user_id, n FROM ("
    " SELECT message_id, emoji, user_id, id,"
    " row_number() OVER (PARTITION BY message_id, emoji ORDER BY id) AS k,"
    " COUNT(*) OVER (PARTITION BY message_id, emoji) AS n,"
    " MIN(id) OVER (PARTITION BY message_id, emoji) AS first_id"
    " FROM message_reactions WHERE message_id = ANY(?)) r"
    " WHERE k <= ? ORDER BY message_id, first_id, id"
)
_LIVE_MESSAGE = Sql(
    "SELECT 1 AS found FROM messages WHERE id = ? AND chat_id = ? AND deleted = ? FOR UPDATE"
)
_HAS_EMOJI = Sql("SELECT 1 AS found FROM message_reactions WHERE message_id = ? AND emoji = ?")
_DISTINCT_EMOJI = Sql(
    "SELECT COUNT(DISTINCT emoji) AS n FROM message_reactions WHERE message_id = ?"
)
_ADD = Sql(
    "INSERT INTO message_reactions (message_id, user_id, emoji, created_at)"
    " VALUES (?, ?, ?, ?) ON CONFLICT (message_id, emoji, user_id) DO NOTHING"
)
_REMOVE = Sql("DELETE FROM message_reactions WHERE message_id = ? AND emoji = ? AND user_id = ?")


def load_reactions(message_ids: Sequence[int]) -> Op[dict[int, tuple[Reaction, ...]]]:
    """The reactions of each message that has any: ``{message_id: (Reaction, …)}``; each
    with its count and the ids of its first ``REACTION_USER_IDS`` users (one statement)."""
    if not message_ids:
        return {}
    rows = (yield q(_REACTIONS_OF, (list(message_ids), REACTION_USER_IDS))).rows
    counts: dict[tuple[int, str], int] = {}
    grouped: dict[int, dict[str, list[int]]] = {}
    for row in rows:
        counts[row["message_id"], row["emoji"]] = row["n"]
        grouped.setdefault(row["message_id"], {}).setdefault(row["emoji"], []).append(
            row["user_id"]
        )
    return {
        mid: tuple(
            Reaction(emoji, counts[mid, emoji], tuple(users)) for emoji, users in by_emoji.items()
        )
        for mid, by_emoji in grouped.items()
    }


def with_reactions(messages: list[Message]) -> Op[list[Message]]:
    """The messages with their ``reactions`` filled in (one statement for all of them)."""
    found = yield from load_reactions([m.id for m in messages if not m.deleted])
    if not found:
        return messages
    return [m.with_reactions(found[m.id]) if m.id in found else m for m in messages]


def _require_live(chat_id: int, message_id: int) -> Op[None]:
    # FOR UPDATE (PostgreSQL): a concurrent deletion in another process waits, so no
    # reaction is added to a message that just became a tombstone.
    if first((yield q(_LIVE_MESSAGE, (message_id, chat_id, False)))) is None:
        raise NotFound("message not found", code="message_not_found")


def add_reaction(
    chat_id: int, message_id: int, user_id: int, emoji: str, max_distinct: int
) -> Op[bool]:
    yield from _require_live(chat_id, message_id)
    if first((yield q(_HAS_EMOJI, (message_id, emoji)))) is None:
        distinct = first((yield q(_DISTINCT_EMOJI, (message_id,))))
        if distinct is not None and distinct["n"] >= max_distinct:
            raise Invalid.field(
                "emoji",
                f"a message has at most {max_distinct} different reactions",
                code="too_many_reactions",
            )
    result = yield q(_ADD, (message_id, user_id, emoji, utc_now()))
    return result.rowcount > 0


def remove_reaction(chat_id: int, message_id: int, user_id: int, emoji: str) -> Op[bool]:
    yield from _require_live(chat_id, message_id)
    result = yield q(_REMOVE, (message_id, emoji, user_id))
    return result.rowcount > 0
