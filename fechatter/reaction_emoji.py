"""The canonical form of a reaction emoji (SPEC §6), from the Unicode data of PyPI ``emoji``.

A reaction is named by exactly one of:

- one RGI emoji (``emoji.EMOJI_DATA``: the sequences of Unicode's emoji-test.txt, so flags,
  keycaps, skin tones and ZWJ sequences are one emoji each). It is stored fully qualified:
  ``❤`` (unqualified) and ``❤️`` (fully qualified) have one name in the data and are one
  reaction. A bare component (a skin-tone modifier, a hair component) is not an emoji on its
  own, and a lone regional indicator is not in the data at all: both are refused.
- a ``:shortcode:`` of 1-32 of ``[a-z0-9_+-]``: one the library knows (its ``alias``
  language: GitHub/Slack aliases such as ``:+1:`` and ``:thumbsup:``, and the lower-case
  Unicode names such as ``:thumbs_up:``) becomes its emoji; any other stays as written, a
  custom emoji the clients may draw.

Anything else raises ``Invalid`` naming the field ``emoji``. Pure: no I/O, nothing from storage,
actors or transports.
"""

from __future__ import annotations

import re

import emoji

from fechatter.errors import Invalid

# Longer input is refused before the library looks at it: the longest RGI emoji is 10 code
# points and the longest shortcode 34 characters.
MAX_EMOJI_INPUT = 64
SHORTCODE_RE = re.compile(r":[a-z0-9_+\-]{1,32}:")

_FULLY_QUALIFIED = emoji.STATUS["fully_qualified"]
_COMPONENT = emoji.STATUS["component"]


def canonical_emoji(raw: str) -> str:
    """The stored form of a reaction named ``raw`` (a decoded path segment): a fully-qualified
    RGI emoji, or a ``:shortcode:`` unknown to the emoji data. Raises ``Invalid`` (field
    ``emoji``) for anything else: empty, over 64 characters, text, two emoji, a component."""
    if not raw:
        raise Invalid.field("emoji", "must not be empty")
    if len(raw) > MAX_EMOJI_INPUT:
        raise Invalid.field("emoji", f"must be at most {MAX_EMOJI_INPUT} characters")
    if raw.startswith(":"):
        if SHORTCODE_RE.fullmatch(raw) is None:
            raise Invalid.field("emoji", "must be a :shortcode: of 1-32 of a-z 0-9 _ + -")
        named = emoji.emojize(raw, language="alias")
        # Unknown: emojize leaves it as it was, and it names a custom emoji.
        return raw if named == raw else _qualified(named)
    return _qualified(raw)


def _qualified(text: str) -> str:
    data = emoji.EMOJI_DATA.get(text)
    if data is None or data["status"] == _COMPONENT:
        raise Invalid.field("emoji", "must be one emoji or a :shortcode:")
    if data["status"] == _FULLY_QUALIFIED:
        return text
    # Every minimally- or un-qualified emoji shares its name with exactly one fully-qualified
    # one, and emojize gives that (tests/test_reaction_emoji.py checks it over all the data).
    qualified = emoji.emojize(str(data["en"]))
    if emoji.EMOJI_DATA.get(qualified, {}).get("status") != _FULLY_QUALIFIED:
        raise Invalid.field("emoji", "must be one emoji or a :shortcode:")  # pragma: no cover
    return qualified
