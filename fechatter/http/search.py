"""``GET /api/search/messages`` (SPEC §9): parse and check the query string, search, page.

Every bad parameter is a 400 ``invalid_query`` problem naming it (like the other routes'
query parameters). The cursor is opaque to clients: ``n<id>`` (newest first: the last id
returned) or ``r<offset>`` (relevance: rows already returned); one made for the other order,
or an offset past ``MAX_RELEVANCE_OFFSET``, is refused.
"""

from __future__ import annotations

import re
from datetime import datetime

from quart import Blueprint, Quart, Response, request

from fechatter.domain.search import Search
from fechatter.errors import BadRequest, FieldError
from fechatter.http.apidoc import SearchPageOut, SearchQueryString, doc
from fechatter.http.common import Context, current_user_id, json_response, query_int
from fechatter.models import SearchFilters, format_time
from fechatter.schemas import MAX_ID
from fechatter.search_text import MAX_QUERY_CHARS, QueryError, SearchQuery, parse_query
from fechatter.text import has_control_characters

# Relevance pages are offsets (a rank is no stable key); deeper than this is refused.
MAX_RELEVANCE_OFFSET = 10_000
_CURSOR = re.compile(r"^([nr])([0-9]{1,19})$")


def _bad(name: str, message: str) -> BadRequest:
    return BadRequest(f"{name} {message}", code="invalid_query", errors=[FieldError(name, message)])


def _query() -> SearchQuery:
    raw = request.args.get("q")
    if raw is None or not raw.strip():
        raise _bad("q", "is required")
    if len(raw) > MAX_QUERY_CHARS:
        raise _bad("q", f"must be at most {MAX_QUERY_CHARS} characters")
    if has_control_characters(raw, allow="\t\n\r"):
        # A query string skips the JSON edge's NUL check: NUL reached the databases (both
        # refused it: a 503) and no message can contain a control character anyway.
        raise _bad("q", "must not contain control characters")
    try:
        return parse_query(raw)
    except QueryError as exc:
        raise _bad("q", str(exc)) from None


def _time(name: str) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is not None:
            return format_time(moment)
    except (ValueError, OverflowError):
        pass
    raise _bad(name, "must be an RFC 3339 time with an offset (2026-01-31T12:00:00Z)")


def _sort() -> bool:
    raw = request.args.get("sort")
    if raw is None or raw in ("", "newest"):
        return False
    if raw == "relevance":
        return True
    raise _bad("sort", "must be newest or relevance")


def _cursor(relevance: bool) -> tuple[int | None, int]:
    """(below_id, offset) from the ``cursor`` parameter."""
    raw = request.args.get("cursor")
    if raw is None or raw == "":
        return None, 0
    match = _CURSOR.match(raw)
    kind = "r" if relevance else "n"
    if match is None or match.group(1) != kind:
        raise _bad("cursor", "must be a next_cursor of this search")
    value = int(match.group(2))
    if relevance:
        if value > MAX_RELEVANCE_OFFSET:
            raise _bad("cursor", f"must not page past {MAX_RELEVANCE_OFFSET} results")
        return None, value
    if not 1 <= value <= MAX_ID:
        raise _bad("cursor", "must be a next_cursor of this search")
    return value, 0


def register(app: Quart, ctx: Context) -> None:
    """Add the search route to ``app``."""
    bp = Blueprint("search", __name__)
    search = Search(ctx.storage)

    @bp.get("/api/search/messages")
    @doc(
        "search",
        "Search messages of the caller's chats",
        query=SearchQueryString,
        ok={200: SearchPageOut},
        errors=(400, 404),
    )
    async def search_messages() -> Response:
        user_id = await current_user_id(ctx)
        query = _query()
        limit = query_int("limit", low=1, high=100, default=20)
        assert limit is not None
        relevance = _sort()
        below_id, offset = _cursor(relevance)
        filters = SearchFilters(
            workspace_id=query_int("workspace_id", low=1, high=MAX_ID),
            chat_id=query_int("chat_id", low=1, high=MAX_ID),
            sender_id=query_int("from", low=1, high=MAX_ID),
            before=_time("before"),
            after=_time("after"),
            relevance=relevance,
            below_id=below_id,
            offset=offset,
        )
        hits, more = await search.messages(user_id, query, filters, limit=limit)
        next_cursor = None
        if more and hits:
            next_cursor = f"r{offset + len(hits)}" if relevance else f"n{hits[-1].message.id}"
        return json_response({"items": [h.to_json() for h in hits], "next_cursor": next_cursor})

    app.register_blueprint(bp)
