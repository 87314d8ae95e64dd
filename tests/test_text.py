"""fechatter.text's control-character rule against Unicode's own data."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from fechatter.text import CONTROL_CHARACTERS, has_control_characters


def test_control_characters_are_exactly_unicodes_cc() -> None:
    cc = {chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cc"}
    assert cc == CONTROL_CHARACTERS


@pytest.mark.parametrize("allow", ["", "\t\n\r"])
def test_every_character_is_judged_as_unicodedata_judges_it(allow: str) -> None:
    # Each code point alone, and inside ordinary text (the scan must not stop at the first
    # character), as the per-character definition says.
    for c in (*range(0x00, 0x300), *range(0x2000, 0x2070), 0xFEFF, 0x1F600, sys.maxunicode):
        ch = chr(c)
        expected = unicodedata.category(ch) == "Cc" and ch not in allow
        assert has_control_characters(ch, allow) is expected, hex(c)
        assert has_control_characters("héllo " + ch + " wörld", allow) is expected, hex(c)


def test_allowed_characters_only_exempt_themselves() -> None:
    assert not has_control_characters("a\tb\nc\r", allow="\t\n\r")
    assert has_control_characters("a\tb\x0bc", allow="\t\n\r")
    assert has_control_characters("tab\t")
    assert not has_control_characters("")
