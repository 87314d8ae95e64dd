"""Message search (SPEC §9): one read over the full-text index, both backends.

The index is kept by the schema, not here: triggers write it in the same transaction as each
message write (SQLite: the FTS5 table ``messages_fts``, migration 0007; PostgreSQL: the column
``messages.search_tsv`` with a GIN index, migration 0014). This module only reads it: the
caller's chats now (a join on ``chat_members``, so a chat left is a chat no longer searched),
live messages only, the filters, and the order:

- newest first: by message id, descending. On SQLite the FTS5 table is the outer loop, read in
  descending rowid (= message id) order, so a page stops after ``limit + 1`` rows that pass the
  joins instead of sorting every match (``EXPLAIN QUERY PLAN``: ``SCAN messages_fts VIRTUAL
  TABLE INDEX …M1<``, no temp B-tree). Paging: ``below_id``.
  PostgreSQL cannot read its GIN index in id order: for newest first it either walks the
  messages backwards by id, checking each (fast for common words, up to seconds for a rare
  one: bench/results/search.md, rare word p99 1.5 s at 1 M), or collects every match from the
  GIN index and sorts them (fast for rare words, slow for common ones). So it first counts the
  matches up to ``SPARSE_BELOW`` (a GIN bitmap scan, no order); fewer → the matches' ids are
  collected and looked up by primary key (``id = ANY(ARRAY(…))``); else the backward walk.
- relevance: FTS5's ``bm25`` / PostgreSQL's ``ts_rank``, ties newest first; every match is
  ranked, so it costs more on common words. Paging: ``offset``.

Never writes; never decides who may search (the caller's id is the membership filter).
"""

from __future__ import annotations

from fechatter.models import SearchFilters, SearchPage
from fechatter.search_text import SearchQuery
from fechatter.storage.reactions import with_reactions
from fechatter.storage.rows import MESSAGE_COLUMNS, to_message
from fechatter.storage.sql import Dialect, Op, dynamic, q


def _pg_tsquery(query: SearchQuery, params: list[object]) -> str:
    """The PostgreSQL tsquery expression of ``query``, appending its parameters."""
    parts = []
    for term in query.terms:
        pieces = []
        if term.text:
            pieces.append("phraseto_tsquery('simple', ?)")
            params.append(term.text)
        if term.prefix:
            # One CJK character: no quote or tsquery operator to escape.
            pieces.append("to_tsquery('simple', ?)")
            params.append(f"'{term.prefix}':*")
        parts.append(pieces[0] if len(pieces) == 1 else f"tsquery_phrase({', '.join(pieces)})")
    return " && ".join(f"({p})" for p in parts)


# PostgreSQL newest first: below this many matches in the whole index, collect and sort them
# instead of walking the messages by id (module doc). A bounded count costs a GIN bitmap scan
# and at most this many heap rows, a few ms; sorting this many ids is well under that.
SPARSE_BELOW = 2000


def search_messages(
    dialect: Dialect,
    user_id: int,
    query: SearchQuery,
    filters: SearchFilters,
    limit: int,
    sparse_below: int = SPARSE_BELOW,
) -> Op[SearchPage]:
    """Up to ``limit`` live messages of ``user_id``'s chats matching every term of ``query``
    and ``filters``, in the order ``filters.relevance`` asks, with their reactions.
    ``sparse_below``: PostgreSQL's threshold between the two newest-first plans (module doc)."""
    match_params: list[object] = []
    rank_params: list[object] = []
    if dialect == "sqlite":
        source = "messages_fts f JOIN messages m ON m.id = f.rowid"
        match = "messages_fts MATCH ?"
        match_params.append(query.fts5())
        key = "f.rowid"
        rank = "f.rank"
    else:
        source = "messages m"
        tsquery = _pg_tsquery(query, match_params)
        match = f"m.search_tsv @@ ({tsquery})"
        key = "m.id"
        rank = f"ts_rank(m.search_tsv, ({tsquery})) DESC"
        rank_params = list(match_params)
    if dialect == "postgres":
        # psycopg prepares a statement run 5 times on a connection, and PostgreSQL then may
        # plan it once for any tsquery (a generic plan, default selectivity): the probe below
        # became a sequential scan and a rare word took 80 ms at 300 k messages instead of
        # 0.3 ms. Custom plans for this transaction (the caller runs the op in one).
        yield q(dynamic("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)"))
    if dialect == "postgres" and not filters.relevance:
        probe = f"SELECT count(*) AS n FROM (SELECT 1 FROM messages m WHERE {match} LIMIT ?) s"
        found = (yield q(dynamic(probe), [*match_params, sparse_below])).rows[0]["n"]
        if found < sparse_below:  # rare: collect every match (GIN), look them up by id
            # An id list, not a join: joined, the planner merge-joined the matches with a
            # backward walk of the primary key (132 ms at 300 k messages, EXPLAIN ANALYZE).
            match = (
                f"m.id = ANY(ARRAY(SELECT h.id FROM messages h WHERE h.search_tsv @@ ({tsquery})))"
            )
    joins = [source, "JOIN chat_members cm ON cm.chat_id = m.chat_id AND cm.user_id = ?"]
    join_params: list[object] = [user_id]
    where = [match, "m.deleted = ?"]
    where_params: list[object] = [*match_params, False]
    if filters.workspace_id is not None:
        joins.append("JOIN chats c ON c.id = m.chat_id AND c.workspace_id = ?")
        join_params.append(filters.workspace_id)
    time_cast = "CAST(? AS timestamptz)" if dialect == "postgres" else "?"
    for clause, value in [
        ("m.chat_id = ?", filters.chat_id),
        ("m.sender_id = ?", filters.sender_id),
        (f"m.created_at < {time_cast}", filters.before),
        (f"m.created_at > {time_cast}", filters.after),
        (f"{key} < ?", None if filters.relevance else filters.below_id),
    ]:
        if value is not None:
            where.append(clause)
            where_params.append(value)
    if filters.relevance:
        order = f"{rank}, m.id DESC LIMIT ? OFFSET ?"
        order_params: list[object] = [*rank_params, limit + 1, filters.offset]
    else:
        order = f"{key} DESC LIMIT ?"
        order_params = [limit + 1]
    sql = (
        f"SELECT {MESSAGE_COLUMNS} FROM {' '.join(joins)}"
        f" WHERE {' AND '.join(where)} ORDER BY {order}"
    )
    params = [*join_params, *where_params, *order_params]
    rows = (yield q(dynamic(sql), params)).rows
    items = yield from with_reactions([to_message(r) for r in rows[:limit]])
    return SearchPage(items=items, has_more=len(rows) > limit)
