"""The edit and delete rules of SPEC §6 as pure functions (``actors/chat_rules.py``)."""

from __future__ import annotations

import pytest

from fechatter.actors import chat_rules as rules
from fechatter.errors import Forbidden
from fechatter.models import Role


def test_only_the_sender_edits() -> None:
    rules.check_edit_message(7, 7)
    with pytest.raises(Forbidden) as caught:
        rules.check_edit_message(8, 7)  # the rule takes no role: owners and admins neither
    assert caught.value.code == "not_message_sender"


@pytest.mark.parametrize("role", list(Role))
def test_the_sender_deletes_with_any_role(role: Role) -> None:
    rules.check_delete_message(7, role, 7)


@pytest.mark.parametrize(("role", "allowed"), [(Role.OWNER, True), (Role.ADMIN, True),
                                               (Role.MEMBER, False)])  # fmt: skip
def test_others_messages_are_deleted_by_owner_and_admins(role: Role, allowed: bool) -> None:
    if allowed:
        rules.check_delete_message(8, role, 7)
        return
    with pytest.raises(Forbidden) as caught:
        rules.check_delete_message(8, role, 7)
    assert caught.value.code == "forbidden"
