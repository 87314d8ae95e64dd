"""``fechatter demo``: seed a small living workspace, then serve it.

Seeding goes through the same ``Storage`` calls as the API (users get real Argon2 hashes) and
is idempotent: if the demo users exist, nothing is written again.
"""

from __future__ import annotations

import logging

import trio

from fechatter.app import build_authenticator
from fechatter.config import Settings
from fechatter.models import ChatType, NewMessage, Role
from fechatter.storage import open_storage

log = logging.getLogger(__name__)

PASSWORD = "fechatter-demo"
PEOPLE = [
    ("Alice Martin", "alice@demo.fechatter"),
    ("Bob Chen", "bob@demo.fechatter"),
    ("Carol Diaz", "carol@demo.fechatter"),
    ("Dan Okafor", "dan@demo.fechatter"),
]
CONVERSATIONS: dict[str, list[tuple[int, str]]] = {
    "general": [
        (0, "Morning all! The new build is up on staging."),
        (1, "Nice — the reconnect banner looks much better now."),
        (2, "I'll run the load test after lunch: 5,000 streams on one box."),
        (3, "Ping me if you need the dashboards."),
    ],
    "launch": [
        (0, "Launch checklist is in the channel description."),
        (2, "Docs are done, screenshots too."),
    ],
    "group": [
        (1, "Lunch at 12:30?"),
        (2, "Yes please, the usual place."),
        (0, "Count me in."),
    ],
    "single": [
        (1, "Hey Alice, got a minute to review my PR?"),
        (0, "Sure, sending comments in 10."),
    ],
}


async def seed(settings: Settings) -> bool:
    """Create the demo workspace unless it exists; True if it was created now."""
    auth = build_authenticator(settings)
    async with open_storage(settings.database_url) as storage:
        if await storage.get_user_by_email(PEOPLE[0][1]) is not None:
            return False
        password_hash = await auth.hash_password(PASSWORD)
        ids = []
        for fullname, email in PEOPLE:
            user, _ = await storage.create_user(fullname, email, password_hash, None)
            ids.append(user.id)
        ws = await storage.create_workspace("Demo Co", "A workspace to try Fechatter in", ids[0])
        for uid in ids[1:]:
            await storage.add_workspace_member(ws.id, uid, Role.MEMBER)
        chats = {
            "general": await storage.create_chat(
                ws.id, ChatType.PUBLIC_CHANNEL, "general", "Everything and nothing", ids[0], ids
            ),
            "launch": await storage.create_chat(
                ws.id, ChatType.PRIVATE_CHANNEL, "launch", "Ship it", ids[0], ids[:3]
            ),
            "group": await storage.create_chat(ws.id, ChatType.GROUP, None, None, ids[1], ids[:3]),
            "single": await storage.create_chat(
                ws.id, ChatType.SINGLE, None, None, ids[1], [ids[1], ids[0]]
            ),
        }
        for key, lines in CONVERSATIONS.items():
            batch = [NewMessage(ids[who], text, (), None, None) for who, text in lines]
            await storage.insert_messages(chats[key].id, batch)
    return True


def instructions(settings: Settings) -> str:
    people = ", ".join(email for _, email in PEOPLE)
    return (
        f"Fechatter demo: open http://{settings.host}:{settings.port}/ and sign in as any of "
        f"{people} with the password '{PASSWORD}' (two browsers = two people)."
    )


def run_seed(settings: Settings) -> None:
    created = trio.run(seed, settings)
    log.info("demo workspace %s", "created" if created else "already there")
