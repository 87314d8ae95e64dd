"""The search text rules (``fechatter.search_text``): shadow text, query parsing, highlights.

Pure functions, no I/O. That PostgreSQL's ``fechatter_search_text`` gives the same shadow is
checked against a real server in ``tests/storage/test_search_index.py``.
"""

from __future__ import annotations

from importlib import resources

import pytest

from fechatter.search_text import (
    PG_CJK,
    PG_PUNCT,
    QueryError,
    highlights,
    parse_query,
    search_text,
)


def _tokens(text: str) -> list[str]:
    return search_text(text).split()


@pytest.mark.parametrize(
    ("content", "tokens"),
    [
        ("plain English words", ["plain", "English", "words"]),
        (
            "foo-bar a.b@c.com 3.14 don't",
            ["foo", "bar", "a", "b", "c", "com", "3", "14", "don", "t"],
        ),
        ("实时聊天应用", ["实时", "时聊", "聊天", "天应", "应用", "用"]),
        ("聊", ["聊"]),
        ("我用Python写", ["我用", "用", "Python", "写"]),
        ("こんにちは", ["こん", "んに", "にち", "ちは", "は"]),
        ("カタカナ", ["カタ", "タカ", "カナ", "ナ"]),
        ("한국어 검색", ["한국", "국어", "어", "검색", "색"]),
        ("𠀀𠀁x", ["𠀀𠀁", "𠀁", "x"]),  # supplementary-plane Han
        ("👍🏽 ok\uff0c好的。", ["👍🏽", "ok\uff0c", "好的", "的", "。"]),
    ],
)
def test_shadow_text_spells_cjk_runs_as_bigrams_and_their_last_character(
    content: str, tokens: list[str]
) -> None:
    assert _tokens(content) == tokens


def test_shadow_text_without_cjk_only_loses_ascii_punctuation() -> None:
    assert search_text("Ünïcödé, naïve!") == "Ünïcödé  naïve "
    assert search_text("") == ""


@pytest.mark.parametrize(
    ("q", "fts5"),
    [
        ("hello", '"hello"'),
        ("hello world", '"hello" AND "world"'),
        ('"hello world" again', '"hello world" AND "again"'),
        ('"unclosed phrase', '"unclosed phrase"'),
        ("foo-bar", '"foo bar"'),
        ("聊天", '"聊天"'),
        ("实时聊天", '"实时 时聊 聊天"'),
        ("聊", '"聊" *'),
        ("用Python", '"用 Python"'),
        ('"app 聊天 go"', '"app 聊天 天 go"'),
        ('"Python写"', '"Python 写" *'),
        ("👍 ok", '"ok"'),
    ],
)
def test_queries_become_anded_phrases(q: str, fts5: str) -> None:
    assert parse_query(q).fts5() == fts5


@pytest.mark.parametrize("q", ["", "   ", "!!!", "👍", '""', "-- ..."])
def test_a_query_without_a_letter_or_digit_is_refused(q: str) -> None:
    with pytest.raises(QueryError, match="letter or digit"):
        parse_query(q)


def test_every_query_token_is_an_index_token_of_a_matching_text() -> None:
    """The query side's tokens of a word found in a text are tokens of that text's shadow."""
    text = "我们在做一个实时聊天应用, built with Python"
    shadow = set(_tokens(text.lower()))
    for word in ["聊天", "实时聊天", "天应用", "应用", "一个", "python"]:
        term = parse_query(word).terms[0]
        assert set(term.text.lower().split()) <= shadow, word


@pytest.mark.parametrize(
    ("content", "q", "spans"),
    [
        ("Hello hello HELLO", "hello", [(0, 5), (6, 11), (12, 17)]),
        ("shell hello", "hell", []),  # whole words only
        ("👍🏽 hello", "hello", [(3, 8)]),  # code points, not UTF-16 units
        ("𠀀聊天", "聊天", [(1, 3)]),
        ("the quick, brown fox", '"quick brown"', [(4, 16)]),
        ("a b a", "a b", [(0, 1), (2, 3), (4, 5)]),
        ("ab", '"ab" ab', [(0, 2)]),  # overlapping ranges merge
        ("我用Python写", "用python", [(1, 8)]),
        ("聊天聊", "聊", [(0, 1), (2, 3)]),
    ],
)
def test_highlights_are_merged_code_point_ranges(
    content: str, q: str, spans: list[tuple[int, int]]
) -> None:
    assert highlights(content, parse_query(q)) == spans


def test_the_postgres_migration_spells_the_same_expressions() -> None:
    folder = resources.files("fechatter.storage").joinpath("migrations", "postgres")
    body = folder.joinpath("0014_search.sql").read_text(encoding="utf-8")
    assert f"'{PG_PUNCT}'" in body
    assert f"'(?<={PG_CJK})({PG_CJK})'" in body
    assert f"'({PG_CJK}{PG_CJK}?)'" in body
