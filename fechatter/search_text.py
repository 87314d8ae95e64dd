"""Search text: the indexed shadow of a message, the parsed query, and highlight ranges.

Neither SQLite's FTS5 tokenizers nor PostgreSQL's ``simple`` configuration split Chinese or
Japanese into words (``实时聊天应用`` is one token to both), so a two-character word inside a
sentence is never found. The index therefore holds a *shadow* of each message's content
(``search_text``) in which every CJK run (Han, kana, Hangul) is spelled as its overlapping
bigrams followed by its last character::

    "用Python写实时聊天应用"  →  " 用 Python 写 实时  时聊  聊天  天应  应用  用 "

(spaces condensed; ASCII punctuation becomes a space, so both backends split ``foo-bar``,
``a.b@c.com`` and ``3.14`` the same way.) Every CJK character of the content starts some
token, so a one-character query is a prefix query; a word of two or more CJK characters is
the phrase of its bigrams. Each backend then tokenises the shadow with its own tokenizer
(SQLite: ``unicode61 remove_diacritics 0``; PostgreSQL: ``to_tsvector('simple', …)``), and
the query text built here (``Term.text``) goes through the same tokenizer, so case folding
and word splitting of non-CJK text are each backend's own but the same on both sides.

PostgreSQL computes the shadow in SQL (migration ``0014_search.sql``, function
``fechatter_search_text``, called by a trigger so every write path — the PL/pgSQL group
commit functions, fenced and outbox variants, edits, tombstones — keeps the index in the same
transaction). Its regular expressions are the ones below, character for character
(``PG_PUNCT``, ``PG_CJK``); ``tests/test_search_text.py`` checks the migration spells them
and that PostgreSQL's function gives this module's output. SQLite calls ``search_text``
itself (a deterministic SQL function registered on each connection, used by triggers).

This module depends on nothing else in the package and never does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Han (CJK unified ideographs, extension A, compatibility, the supplementary planes B to G),
# Hiragana, Katakana (+ phonetic extensions, half-width forms), Hangul (syllables, Jamo,
# compatibility Jamo). Spelled with \u / \U escapes that both Python's ``re`` and
# PostgreSQL's ARE syntax read the same way.
CJK_RANGES = (
    r"\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    r"\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
PG_CJK = f"[{CJK_RANGES}]"
# ASCII punctuation and symbols: !"#$%&'()*+,-./ :;<=>?@ [\]^_` {|}~
PG_PUNCT = r"[!-/:-@\[-`{-~]"

_CJK = re.compile(PG_CJK)
_PUNCT = re.compile(PG_PUNCT)
_RUN = re.compile(f"{PG_CJK}+")
# A query's pieces: CJK runs and the non-CJK chunks between white space.
_PIECES = re.compile(f"{PG_CJK}+|[^\\s{CJK_RANGES}]+")
# A letter or digit that is not CJK: what a non-CJK word must not touch to be a whole word.
_WORD_CHAR = f"[^\\W_{CJK_RANGES}]"
_WORDS = re.compile(r"[^\W_]+")

MAX_QUERY_CHARS = 256


def search_text(content: str) -> str:
    """The shadow of ``content`` that the index tokenises (see the module docstring).

    Deterministic and pure: SQLite's triggers recompute it to remove a row's old tokens.
    """
    text = _PUNCT.sub(" ", content)
    if _CJK.search(text) is None:
        return text
    return _RUN.sub(_bigrams, text)


def _bigrams(run: re.Match[str]) -> str:
    # " AB  BC  CD  D " for the run ABCD: what PostgreSQL's two regexp_replace calls spell
    # (double each character that follows another, then wrap each pair in spaces).
    r = run.group()
    return " " + "  ".join([r[k : k + 2] for k in range(len(r) - 1)] + [r[-1]]) + " "


class QueryError(ValueError):
    """The query has nothing to search for; the message says why (for the ``q`` field)."""


@dataclass(frozen=True, slots=True)
class Term:
    """One ANDed term of a query: a bare word or a quoted phrase.

    ``text``: the phrase to give the backend's tokenizer (CJK already expanded), maybe empty;
    ``prefix``: a single CJK character the term's last token must start with, or None;
    ``pattern``: a regular expression finding the term in content, for highlights.
    """

    text: str
    prefix: str | None
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A parsed query: its terms, all of which a message must contain."""

    terms: tuple[Term, ...]

    def fts5(self) -> str:
        """The FTS5 ``MATCH`` expression: each term a quoted phrase (``"…" *`` for a
        prefix), ANDed. The shadow has no ``"`` (ASCII punctuation is removed)."""
        parts = []
        for term in self.terms:
            tokens = f"{term.text} {term.prefix}" if term.prefix else term.text
            parts.append(f'"{tokens.strip()}"' + (" *" if term.prefix else ""))
        return " AND ".join(parts)


def parse_query(q: str) -> SearchQuery:
    """Parse ``q``: white-space separated words and ``"quoted phrases"`` (an unclosed quote
    runs to the end), ANDed. Raises ``QueryError`` if no term has a letter or digit."""
    terms: list[Term] = []
    for i, chunk in enumerate(q.split('"')):
        # Even chunks are outside quotes: one term per word. Odd ones are phrases.
        texts = chunk.split() if i % 2 == 0 else [chunk]
        for text in texts:
            term = _term(text)
            if term is not None:
                terms.append(term)
    if not terms:
        raise QueryError("must contain a letter or digit")
    return SearchQuery(tuple(terms))


def _term(raw: str) -> Term | None:
    pieces = [p for p in _PIECES.findall(_PUNCT.sub(" ", raw)) if any(ch.isalnum() for ch in p)]
    if not pieces:
        return None
    tokens: list[str] = []
    units: list[str] = []
    prefix: str | None = None
    for n, piece in enumerate(pieces):
        last = n == len(pieces) - 1
        if _CJK.match(piece):
            units.append(re.escape(piece))
            if len(piece) == 1 and last:
                prefix = piece
                continue
            tokens.extend(piece[k : k + 2] for k in range(len(piece) - 1))
            if not last or len(piece) == 1:
                # The run's last character: the token the index adds after each run's bigrams.
                tokens.append(piece[-1])
        else:
            tokens.append(piece)
            units.extend(
                f"(?<!{_WORD_CHAR}){re.escape(word)}(?!{_WORD_CHAR})"
                for word in _WORDS.findall(piece)
            )
    pattern = re.compile(r"[\W_]*".join(units), re.IGNORECASE)
    return Term(" ".join(tokens), prefix, pattern)


def highlights(content: str, query: SearchQuery) -> list[tuple[int, int]]:
    """Where ``query``'s terms occur in ``content``: sorted, merged ``(start, end)`` ranges of
    code-point offsets (Python ``str`` indices), end exclusive."""
    spans = sorted(
        (m.start(), m.end())
        for term in query.terms
        for m in term.pattern.finditer(content)
        if m.end() > m.start()
    )
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
