"""The actor system: one nursery owning the ChatActors (via the Directory), the
UserActors (via the UserHub) and the presence flusher.

``open_actor_system`` is the only way to get one; leaving the block cancels every actor (a
commit already handed to storage finishes first: storage threads are not abandoned).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from fechatter.actors.directory import Directory, DirectoryConfig
from fechatter.actors.user import HubConfig, UserHub
from fechatter.storage import Storage


@dataclass(frozen=True, slots=True)
class ActorSystem:
    directory: Directory
    users: UserHub


@asynccontextmanager
async def open_actor_system(
    storage: Storage,
    config: DirectoryConfig | None = None,
    hub_config: HubConfig | None = None,
) -> AsyncIterator[ActorSystem]:
    """Run the actor system for the duration of the block."""
    async with trio.open_nursery() as nursery:
        cfg = hub_config or HubConfig()

        async def presence_peers(user_id: int) -> list[int]:
            return await storage.presence_peer_ids(user_id, cfg.presence_max_chat_size)

        users = UserHub(nursery, cfg, co_members=presence_peers)
        nursery.start_soon(users.serve_presence, name="presence")
        directory = Directory(storage, users, nursery, config)
        try:
            yield ActorSystem(directory, users)
        finally:
            nursery.cancel_scope.cancel()
