"""Message search for every transport: the storage query, then highlights (SPEC §9).

Parsing the words (``search_text.parse_query``) happens at the edge; this module asks storage
for a page of the caller's live matches and marks where each term occurs in each message, as
code-point ranges the client turns into text nodes (the server never sends markup).
"""

from __future__ import annotations

from dataclasses import dataclass

from fechatter.models import Message, SearchFilters
from fechatter.search_text import SearchQuery, highlights
from fechatter.storage import Storage


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One found message and the ``(start, end)`` code-point ranges of its matches."""

    message: Message
    highlights: list[tuple[int, int]]

    def to_json(self) -> dict[str, object]:
        """The wire shape: ``{message, chat_id, highlights: [[start, end], …]}``."""
        return {
            "message": self.message.to_json(),
            "chat_id": self.message.chat_id,
            "highlights": [[start, end] for start, end in self.highlights],
        }


class Search:
    """Searches messages on behalf of a user; holds only the storage it reads."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def messages(
        self, user_id: int, query: SearchQuery, filters: SearchFilters, *, limit: int
    ) -> tuple[list[SearchHit], bool]:
        """Up to ``limit`` hits in the caller's chats (``Storage.search_messages``) and
        whether more follow. Raises only what storage raises (``Unavailable``)."""
        page = await self._storage.search_messages(user_id, query, filters, limit=limit)
        hits = [SearchHit(m, highlights(m.content, query)) for m in page.items]
        return hits, page.has_more
