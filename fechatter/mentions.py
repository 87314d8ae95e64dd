"""Mentions in message content (SPEC §6): ``<@USER_ID>`` tokens and ``<!channel>``.

Pure functions; the ChatActor, which knows the chat's members, applies them to every send and
edit, so ``mentions`` only ever names members of the chat at the time of writing. The token
syntax is Slack's (``<@U123>``, ``<!channel>``: https://api.slack.com/reference/surfaces/formatting).
"""

from __future__ import annotations

import re
from collections.abc import Container

# Up to 19 digits: any larger number is not an id (ids are below 2**63), so it stays text.
_USER = re.compile(r"<@([1-9][0-9]{0,18})>")
_CHANNEL = "<!channel>"


def parse_mentions(content: str, members: Container[int]) -> tuple[tuple[int, ...], bool]:
    """``(user ids mentioned that are in members, ascending and distinct; whether the
    content mentions the whole channel)``. Tokens naming non-members are left as text."""
    ids = {int(m.group(1)) for m in _USER.finditer(content)}
    return tuple(sorted(uid for uid in ids if uid in members)), _CHANNEL in content
