"""The actor system: one supervisor nursery owning the Directory's ChatActors and the UserHub.

``open_actor_system`` is the only way to get one; leaving the block cancels every actor (a
commit already handed to storage finishes first: storage threads are not abandoned).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from fechatter.actors.directory import Directory, DirectoryConfig
from fechatter.actors.user import UserHub
from fechatter.storage import Storage


@dataclass(frozen=True, slots=True)
class ActorSystem:
    directory: Directory
    users: UserHub


@asynccontextmanager
async def open_actor_system(
    storage: Storage, config: DirectoryConfig | None = None
) -> AsyncIterator[ActorSystem]:
    """Run the actor system for the duration of the block."""
    users = UserHub()
    async with trio.open_nursery() as nursery:
        directory = Directory(storage, users, nursery, config)
        try:
            yield ActorSystem(directory, users)
        finally:
            nursery.cancel_scope.cancel()
