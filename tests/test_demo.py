"""``fechatter demo`` seeds a usable workspace once, through the real storage."""

from __future__ import annotations

from collections.abc import Callable

from fechatter import demo
from fechatter.app import build_authenticator
from fechatter.config import Settings
from fechatter.storage import open_storage


async def test_seed_is_idempotent_and_signin_ready(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    assert await demo.seed(settings) is True
    assert await demo.seed(settings) is False
    async with open_storage(settings.database_url) as storage:
        alice = await storage.get_credentials(demo.PEOPLE[0][1])
        assert alice is not None
        chats = await storage.list_chats(alice.user.id, None)
        assert {c.record.type.value for c in chats} == {
            "PublicChannel",
            "PrivateChannel",
            "Group",
            "Single",
        }
        general = next(c for c in chats if c.record.name == "general")
        page = await storage.list_messages(general.id, limit=50, before=None, after=None)
        assert len(page.items) == len(demo.CONVERSATIONS["general"])
        assert general.unread_count == 3  # the others' messages, unread for Alice
    auth = build_authenticator(settings)
    assert await auth.verify_password(alice.password_hash, demo.PASSWORD)
    assert demo.instructions(settings).count("@demo.fechatter") == len(demo.PEOPLE)
