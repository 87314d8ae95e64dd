"""``canonical_emoji``: one RGI emoji → fully qualified, ``:shortcode:`` → its emoji or itself,
anything else → ``Invalid`` naming ``emoji`` (SPEC §6). Pure: no server."""

from __future__ import annotations

import hashlib

import emoji
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fechatter.errors import Invalid
from fechatter.reaction_emoji import MAX_EMOJI_INPUT, SHORTCODE_RE, canonical_emoji

FULLY_QUALIFIED = emoji.STATUS["fully_qualified"]
COMPONENT = emoji.STATUS["component"]


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("👍", "👍"),
        ("❤", "❤️"),  # unqualified → fully qualified: one reaction
        ("❤️", "❤️"),
        ("☺", "☺️"),
        ("👍🏽", "👍🏽"),  # skin tone
        ("🇫🇷", "🇫🇷"),  # flag
        ("👨‍👩‍👧‍👦", "👨‍👩‍👧‍👦"),  # ZWJ family
        ("🏳‍🌈", "🏳️‍🌈"),  # ZWJ sequence missing its VS16
        ("👁‍🗨", "👁️‍🗨️"),
        ("1⃣", "1️⃣"),  # keycap
        ("#️⃣", "#️⃣"),
        ("🏴󠁧󠁢󠁳󠁣󠁴󠁿", "🏴󠁧󠁢󠁳󠁣󠁴󠁿"),  # subdivision flag (tag sequence)
        ("🧑🏽‍🚀", "🧑🏽‍🚀"),
        (":+1:", "👍"),
        (":thumbsup:", "👍"),
        (":thumbs_up:", "👍"),
        (":-1:", "👎"),
        (":heart:", "❤️"),  # an alias of an emoji whose bare form is unqualified
        (":relaxed:", "☺️"),
        (":one:", "1️⃣"),
        (":partyparrot:", ":partyparrot:"),  # unknown: a custom emoji, kept as written
        (":a-b_c+1:", ":a-b_c+1:"),
        (":" + "x" * 32 + ":", ":" + "x" * 32 + ":"),
    ],
)
def test_canonical_forms(raw: str, stored: str) -> None:
    assert canonical_emoji(raw) == stored


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "a",
        "hello",
        "1",
        "#",
        "👍👍",  # two emoji
        "👍 ",
        " 👍",
        "👍a",
        "🏽",  # a bare skin-tone modifier
        "🦰",  # a bare hair component
        "🇫",  # a lone regional indicator
        "\u200d",
        "\ufe0f",
        "👍\ufe0f\ufe0f",
        "::",
        ":",
        ":+1",
        ":Thumbsup:",  # upper case is not a shortcode
        ":thumbs up:",
        ":" + "x" * 33 + ":",
        ":a::b:",
        ":😀:",
        "👍" * (MAX_EMOJI_INPUT + 1),
        "x" * (MAX_EMOJI_INPUT + 1),
    ],
)
def test_refused(raw: str) -> None:
    with pytest.raises(Invalid) as caught:
        canonical_emoji(raw)
    assert caught.value.status == 422
    assert [e.field for e in caught.value.errors] == ["emoji"]


def test_every_emoji_of_the_data_maps_to_its_fully_qualified_form() -> None:
    """Over the library's whole table: components refused, everything else stored as the
    fully-qualified emoji of the same name (so qualification variants are one reaction)."""
    for raw, data in emoji.EMOJI_DATA.items():
        if data["status"] == COMPONENT:
            with pytest.raises(Invalid):
                canonical_emoji(raw)
            continue
        stored = canonical_emoji(raw)
        assert emoji.EMOJI_DATA[stored]["status"] == FULLY_QUALIFIED, raw
        assert emoji.EMOJI_DATA[stored]["en"] == data["en"], raw
        assert canonical_emoji(stored) == stored


# The shortcodes the library knows (the only ones `canonical_emoji` turns into an emoji), as a
# count and a SHA-256 of their sorted, newline-joined list. A stored `:shortcode:` reaction is
# one the library did not know; a release that learns it would make every path name the emoji
# instead, and the stored row could never be removed. So a change here is a data migration
# (docs/api.md "Reactions"), not a dependency bump: pyproject pins `emoji` to one minor version.
KNOWN_SHORTCODES = 3364
KNOWN_SHORTCODES_SHA256 = "d33819f1a32e040b873961c3003ddb6199c66a3dcc0a4c88fcb570838e31a1f8"


def test_the_library_knows_the_shortcodes_it_knew() -> None:
    names = sorted(
        {
            name
            for data in emoji.EMOJI_DATA.values()
            if data["status"] != COMPONENT  # refused whatever they are called
            for name in [data["en"], *data.get("alias", [])]
            if SHORTCODE_RE.fullmatch(name)
        }
    )
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
    assert (len(names), digest) == (KNOWN_SHORTCODES, KNOWN_SHORTCODES_SHA256), (
        f"emoji {emoji.__version__} changed its shortcodes: migrate stored reactions first"
    )
    assert all(canonical_emoji(name) != name for name in names)


def test_the_canonical_form_is_stable() -> None:
    for raw in ("❤", ":+1:", ":heart:", ":custom:", "🏳‍🌈"):
        once = canonical_emoji(raw)
        assert canonical_emoji(once) == once


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.text(alphabet=st.sampled_from([*":+-_abz09", "\u200d", "\ufe0f", "👍", "🏽", "🇫"])),
        st.sampled_from(list(emoji.EMOJI_DATA)).flatmap(
            lambda e: st.tuples(st.just(e), st.text(max_size=3)).map("".join)
        ),
        st.from_regex(r":[a-z0-9_+\-]{0,40}:", fullmatch=True),
    )
)
def test_any_text_is_canonical_or_invalid(raw: str) -> None:
    """Never another exception; an accepted name is canonical and stable."""
    try:
        stored = canonical_emoji(raw)
    except Invalid as exc:
        fields = [e.field for e in exc.errors]
        assert fields == ["emoji"], fields
        return
    assert canonical_emoji(stored) == stored
    if stored.startswith(":"):
        assert stored == raw
    else:
        assert emoji.EMOJI_DATA[stored]["status"] == FULLY_QUALIFIED
